"""Start-up on a slow machine: the CLI gives Prefect's temporary server minutes to start, uses a server that
PREFECT_API_URL names, and turns a server it cannot reach into one line and exit status 2, before touching runs/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HARNESS_STARTUP_TIMEOUT_S

from evoforge import STARTUP_TIMEOUT_ENV
from evoforge.core.config import RunConfig
from app.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(generations=1, experts=2, batch_size=2, max_new_tokens=8, continue_tokens=0, seed=1)


def python(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """This process's environment without any Prefect API or timeout setting, with a fresh PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", STARTUP_TIMEOUT_ENV)}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(ROOT), **extra}


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_cli_waits_at_least_as_long_as_the_test_harness_and_a_users_value_wins(tmp_path):
    show = ("import app.cli; from prefect.settings import get_current_settings as s; "
            "print(s().server.ephemeral.startup_timeout_seconds)")
    default = python("-c", show, env=clean_env(tmp_path))
    assert default.returncode == 0, default.stderr
    assert int(default.stdout) >= HARNESS_STARTUP_TIMEOUT_S  # Prefect's own default is 20 s
    own = python("-c", show, env=clean_env(tmp_path, **{STARTUP_TIMEOUT_ENV: "45"}))
    assert int(own.stdout) == 45


def test_a_prefect_server_that_cannot_be_reached_is_one_line_and_exit_2_and_runs_are_kept(tmp_path):
    from evoforge.steps.evolution import prepare_run

    # A run folder from an earlier attempt: the failed command must leave it as it is, so the same command resumes.
    settings = {**TINY, "out": str(tmp_path / "runs"), "run_name": "kept"}
    prepare_run(RunConfig(**settings))
    before = snapshot(tmp_path / "runs")
    (tmp_path / "run.json").write_text(json.dumps(settings))
    command = ("-m", "app.cli", "run", "--config", str(tmp_path / "run.json"))

    # The temporary server gets no time to start (0 s: fails on any machine, however fast).
    failed = python(*command, env=clean_env(tmp_path, **{STARTUP_TIMEOUT_ENV: "0"}))
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2, failed.stderr
    assert len(lines) == 1 and "Traceback" not in failed.stdout + failed.stderr, failed.stderr
    assert lines[0].startswith("evoforge: Prefect's temporary server did not answer within 0 s")
    for fix in (STARTUP_TIMEOUT_ENV, "`evoforge ui`", "PREFECT_API_URL"):
        assert fix in lines[0]

    # PREFECT_API_URL names a server that is not there (a free port): that server is used, so it is checked.
    nowhere = f"http://127.0.0.1:{free_port()}/api"
    refused = python(*command, env=clean_env(tmp_path, PREFECT_API_URL=nowhere))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"PREFECT_API_URL={nowhere} does not answer" in lines[0] and "`evoforge ui`" in lines[0]

    assert snapshot(tmp_path / "runs") == before
    assert prepare_run(RunConfig(**settings)).completed == 0  # still the same run, and resumable


@pytest.mark.slow
def test_a_server_that_prefect_api_url_names_is_used_when_it_answers(prefect_server):
    from prefect.settings import PREFECT_API_URL

    from app.prefect_api import ensure_prefect_api

    assert PREFECT_API_URL.value()  # the harness points this process at its own server
    assert ensure_prefect_api() == PREFECT_API_URL.value()


@pytest.mark.slow
def test_the_temporary_server_starts_in_a_fresh_checkout(tmp_path):
    """A fresh clone has no .state/: Prefect makes its home without parents, and its server then failed on every
    try to open its database until the start-up timeout (found by running `make run` on a fresh clone)."""
    home = tmp_path / "checkout" / ".state" / "prefect"
    start = ("import app.cli; from app.prefect_api import ensure_prefect_api; "
             "print(ensure_prefect_api())")
    started = python("-c", start, env={**clean_env(tmp_path), "PREFECT_HOME": str(home)})
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().startswith("http://127.0.0.1:") and (home / "prefect.db").is_file()
