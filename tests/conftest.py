"""Shared fixtures: one Prefect test server, one MLflow store and each real model loaded once per session."""

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="evoforge-tests-"))
# Set before Prefect or MLflow are imported by any test module: nothing writes into ~/.prefect or the repo.
os.environ.setdefault("PREFECT_HOME", str(_SESSION_DIR / "prefect"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


# How long the harness waits for its Prefect server; the CLI's own default must be at least this (test_startup.py).
HARNESS_STARTUP_TIMEOUT_S = 180


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=HARNESS_STARTUP_TIMEOUT_S):
        yield


def run_killed_child(script: str, config_json: str):
    """`script` (Python that runs a flow with an injected SIGKILL) in a child process against this session's
    Prefect server and MLflow store, with `config_json` as its argument; asserts the child died by SIGKILL."""
    import signal
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", script, config_json], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]  # it got as far as the injected kill


@pytest.fixture(scope="session")
def backend():
    from models.loading import load_backend

    return load_backend("smollm2", "auto")  # the precision flows use, so they share this one copy


@pytest.fixture(scope="session")
def exact_backend():
    """float32, for tests that compare two computations: bfloat16 kernels round differently on AMX and AVX-512
    CPUs (two scoring paths differ by up to 0.06 in log-probability there), float32 agrees to ~1e-5 everywhere."""
    from models.loading import load_backend

    return load_backend("smollm2", "float32")


@pytest.fixture(scope="session")
def embedder():
    from models.embedder import load_embedder

    return load_embedder("minilm")


@pytest.fixture
def opinions():
    from evoforge.core.domain import load_domain

    return load_domain("opinions")
