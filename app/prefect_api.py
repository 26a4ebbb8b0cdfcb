"""The Prefect API a command's flows talk to, checked before any flow starts.

Where PREFECT_API_URL is set (for example to a running `evoforge ui`), that server must answer; else Prefect's
temporary server is started here, waiting PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (evoforge's default:
a few minutes, see evoforge/__init__.py). Starting it before the flow does turns a failure into one clear
`PrefectUnavailable` instead of a traceback from deep inside the flow's first API call; the flow then reuses the
same server (Prefect keeps one temporary server per process).
"""

from evoforge import STARTUP_TIMEOUT_ENV

FIXES = (f"raise {STARTUP_TIMEOUT_ENV} (e.g. 600), start `evoforge ui` and set "
         "PREFECT_API_URL=http://127.0.0.1:4200/api, or check PREFECT_API_URL")


class PrefectUnavailable(RuntimeError):
    """No Prefect API could be reached; the message is one line naming what failed and the fixes."""


def ensure_prefect_api(health_timeout_s: float = 30) -> str:
    """Return the API URL the flows will use, once it answers; raise PrefectUnavailable if it does not."""
    import httpx
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.api.url
    if url:
        key = settings.api.key  # Prefect Cloud's health check, as Prefect's own client sends it
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        try:
            response = httpx.get(f"{url.rstrip('/')}/health", headers=headers, timeout=health_timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as err:
            reason = str(err).splitlines()[0] or type(err).__name__
            raise PrefectUnavailable(f"the Prefect server at PREFECT_API_URL={url} does not answer ({reason}): start "
                                     "it (`evoforge ui`), or check or unset PREFECT_API_URL (unset, a temporary "
                                     "server starts)") from None
        return url
    if not settings.server.ephemeral.enabled:
        raise PrefectUnavailable("PREFECT_API_URL is not set and Prefect's temporary server is disabled "
                                 "(PREFECT_SERVER_EPHEMERAL_ENABLED): start `evoforge ui` and set "
                                 "PREFECT_API_URL=http://127.0.0.1:4200/api")
    from prefect.server.api.server import SubprocessASGIServer

    # Prefect makes its home folder without parents (.state/prefect in a fresh checkout has none), and its server
    # then fails on every try to open its database until the start-up timeout.
    settings.home.mkdir(parents=True, exist_ok=True)
    server = SubprocessASGIServer()
    try:
        server.start()
    except RuntimeError:
        server.stop()  # a half-started server would hold its port and database until this process exits
        waited = settings.server.ephemeral.startup_timeout_seconds
        raise PrefectUnavailable(f"Prefect's temporary server did not answer within {waited} s: {FIXES}") from None
    return server.api_url
