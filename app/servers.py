"""`evoforge ui`: the Prefect server, the MLflow server and the deployment runner, on one machine.

    Prefect  http://127.0.0.1:4200   SQLite under <state>/prefect/
    MLflow   http://127.0.0.1:5000   SQLite ./mlflow.db, artifacts ./mlartifacts; the one writer: flow runs log
                                     to it over HTTP
    runner   python -m deployments.serve: the nightly evolution run and the on-demand flows

Each is a child process in its own process group with its log under <state>/logs/. Ctrl-C or SIGTERM stops the
runner first (it cancels its in-flight flow runs, which keep what they committed), then the servers, each within
seconds. A taken port or a second `evoforge ui` on the same state
folder is refused before anything starts, so neither database is touched twice.
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from evoforge import DEFAULT_STARTUP_TIMEOUT_S, TELEMETRY_OFF


class StartupError(RuntimeError):
    """A server could not start: a port is taken, the state folder is in use, or a server died at start."""


@dataclass
class Stack:
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    state: Path = Path(".state")
    root: Path = Path(".")  # where mlflow.db, mlartifacts/ and runs/ live
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def env(self) -> dict[str, str]:
        """What every process of the stack sees: where the servers are, and telemetry off."""
        prefect_home = (self.state / "prefect").resolve()
        return {
            **os.environ,
            **TELEMETRY_OFF,
            "HF_HUB_OFFLINE": "1",
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_API_URL": f"{self.prefect_url}/api",
            "PREFECT_UI_URL": self.prefect_url,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else MLflow starts 9 processes and 2.7 GB
        }


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def lock_state(state: Path):
    """Hold an exclusive lock on <state>/ui.lock while the stack runs; a second stack on the same folder fails."""
    state.mkdir(parents=True, exist_ok=True)
    handle = open(state / "ui.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise StartupError(f"{state} is in use by another `evoforge ui` ({handle.read().strip() or 'running'}); "
                           "stop it first, or pass another --state folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def check_ports(stack: Stack) -> None:
    for name, port, flag in (("Prefect", stack.prefect_port, "--prefect-port"), ("MLflow", stack.mlflow_port, "--mlflow-port")):
        if not port_is_free(stack.host, port):
            raise StartupError(f"port {port} on {stack.host} is taken, so the {name} server cannot start: stop what "
                               f"uses it (another `evoforge ui`?) or pass {flag} with a free port")


def _start(stack: Stack, name: str, command: list[str]) -> subprocess.Popen:
    logs = stack.state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "ab")
    # Its own process group: Ctrl-C reaches only `evoforge ui`, which then stops the children in order.
    process = subprocess.Popen(command, env=stack.env(), stdout=log, stderr=subprocess.STDOUT, cwd=stack.root,
                               start_new_session=True)
    stack.processes[name] = process
    return process


def wait_until_healthy(stack: Stack, name: str, url: str, timeout: float = DEFAULT_STARTUP_TIMEOUT_S) -> None:
    process = stack.processes[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartupError(f"the {name} server exited at start (code {process.returncode}); see "
                               f"{stack.state / 'logs' / (name + '.log')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise StartupError(f"the {name} server did not answer {url} within {timeout:.0f} s; see {stack.state / 'logs'}")


def start_servers(stack: Stack) -> None:
    """The Prefect and MLflow servers, started side by side, then waited for."""
    check_ports(stack)
    bin_dir = Path(sys.executable).parent
    root = stack.root.resolve()
    _start(stack, "prefect", [str(bin_dir / "prefect"), "server", "start", "--host", stack.host,
                              "--port", str(stack.prefect_port), "--analytics-off"])
    _start(stack, "mlflow", [
        str(bin_dir / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root", (root / "mlartifacts").as_uri(), "--host", stack.host,
        "--port", str(stack.mlflow_port), "--workers", "1",
    ])
    wait_until_healthy(stack, "mlflow", f"{stack.mlflow_url}/health")
    wait_until_healthy(stack, "prefect", f"{stack.prefect_url}/api/health")


def start_runner(stack: Stack, cron: str, timezone: str, parameters: dict | None = None) -> subprocess.Popen:
    """The process that serves the deployments and runs their flow runs."""
    return _start(stack, "runner", [sys.executable, "-m", "deployments.serve", "--cron", cron,
                                    "--timezone", timezone, "--parameters", json.dumps(parameters or {})])


# How long each process may take to stop after SIGTERM before it is killed. The runner cancels its in-flight flow
# runs first (each usually exits within seconds; Prefect kills one after 30 s), so it gets more.
STOP_GRACE_S = {"runner": 60, "prefect": 15, "mlflow": 15}


def stop(stack: Stack) -> None:
    """Stop the runner first (it cancels its in-flight flow runs: each keeps the generations it committed and ends
    Cancelled, not Running), then the servers. SIGTERM, not SIGINT: a process started with SIGINT ignored (e.g. from a script) passes that on to
    its children, and they would ignore it. What is still there after the grace is killed with its process group."""
    for name in [n for n in ("runner", "prefect", "mlflow") if n in stack.processes]:
        process = stack.processes[name]
        # The runner alone: it signals its flow runs itself, after telling them it is a cancellation. The servers
        # with their process groups (their workers).
        send = os.kill if name == "runner" else os.killpg
        if process.poll() is None:
            try:
                send(process.pid, signal.SIGTERM)
                process.wait(STOP_GRACE_S[name])
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the leader if it is still there, and anything it left behind
        except OSError:  # the group is gone (the usual case)
            pass
        process.wait()
    stack.processes.clear()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_ui(stack: Stack, cron: str, timezone: str, parameters: dict | None = None) -> int:
    """Start everything, print where to look, and wait for Ctrl-C (or for a child to die)."""
    lock = lock_state(stack.state)
    # `kill` (SIGTERM) stops the stack as cleanly as Ctrl-C does, instead of leaving the servers orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"starting the Prefect server ({stack.prefect_url}) and the MLflow server ({stack.mlflow_url}) ...",
              flush=True)
        start_servers(stack)
        start_runner(stack, cron, timezone, parameters)
        print(f"\n  Prefect UI  {stack.prefect_url}   (deployments: evolution_run/nightly, moe_tournament/ask, ...)")
        print(f"  MLflow UI   {stack.mlflow_url}")
        print(f"  nightly run: cron '{cron}' ({timezone}); logs in {stack.state / 'logs'}\n  Ctrl-C stops all.",
              flush=True)
        while all(p.poll() is None for p in stack.processes.values()):
            time.sleep(1)
        dead = [n for n, p in stack.processes.items() if p.poll() is not None]
        print(f"evoforge ui: {', '.join(dead)} exited; see {stack.state / 'logs'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not cut the stop short and leave the servers running without us; it takes seconds.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        stop(stack)
        lock.close()
