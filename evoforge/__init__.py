"""evoforge: quality-diversity evolution of LLM outputs and LLM experts."""

__version__ = "0.1.0"

import os as _os

# No telemetry leaves the machine, whichever entry point (CLI, flow, test, benchmark) imports evoforge first.
for _name, _value in {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    _os.environ.setdefault(_name, _value)
