"""evoforge: quality-diversity evolution of LLM outputs and LLM experts."""

__version__ = "0.1.0"

import os as _os

# No telemetry leaves the machine, whichever entry point (CLI, flow, test, benchmark) imports evoforge first.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# Prefect waits 20 s for its temporary server by default; on a cold 2-core machine creating a new database takes
# longer, and the first `evoforge run` failed. Prefect reads its settings when it is first imported, so this must
# be set before then: evoforge's entry points import evoforge first. The test harness waits 180 s; stay above it.
# `evoforge ui` gives its own servers as long.
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_S = 300

# A user's own values win.
for _name, _value in {**TELEMETRY_OFF, STARTUP_TIMEOUT_ENV: str(DEFAULT_STARTUP_TIMEOUT_S)}.items():
    _os.environ.setdefault(_name, _value)
