"""The single-machine stack of `evoforge ui`: real Prefect and MLflow servers and the deployment runner.

One stack per module, on free ports in a temporary folder; the flow runs it executes are real (tiny) evolution
runs on the embedded models.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from app.servers import (
    Stack,
    StartupError,
    check_ports,
    free_port,
    lock_state,
    start_runner,
    start_servers,
    stop,
)

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

TINY = {"generations": 1, "experts": 2, "batch_size": 2, "max_new_tokens": 8, "continue_tokens": 0,
        "judge_references": False, "seed": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    stack = Stack(prefect_port=free_port(), mlflow_port=free_port(), state=root / ".state", root=root)
    try:
        start_servers(stack)
        # Every minute, so a scheduled run appears within the test; the default parameters keep each run tiny.
        start_runner(stack, cron="* * * * *", timezone="UTC", parameters={"config": {**TINY, "run_name": None}})
        yield stack
    finally:
        stop(stack)


class RetryBusy(httpx.HTTPTransport):
    """Retries a 503, as Prefect's own client does: the server answers 503 when SQLite is busy (the runner, the
    scheduler and the UI write to one file), which a client is meant to retry."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(8):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(0.5 * 2**attempt)
        return response


def prefect_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api", timeout=30, transport=RetryBusy())


def api(stack: Stack) -> httpx.Client:
    return prefect_client(stack.prefect_url)


def poll_api(stack: Stack, ask, wait: float, every: float, what: str):
    """`ask(client)` every `every` seconds until it returns something, for at most `wait` seconds."""
    deadline = time.monotonic() + wait
    with api(stack) as client:
        while time.monotonic() < deadline:
            if (found := ask(client)) is not None:
                return found
            time.sleep(every)
    raise AssertionError(f"{what} within {wait} s")


def deployment_id(stack: Stack, flow: str, name: str, wait: float = 300) -> str:
    def found(client):
        response = client.get(f"/deployments/name/{flow}/{name}")
        return response.json()["id"] if response.status_code == 200 else None

    return poll_api(stack, found, wait, 1, f"deployment {flow}/{name} never appeared")


def flow_run_named(stack: Stack, name: str, wait: float = 300) -> str:
    def found(client):
        runs = client.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}).json()
        return runs[0]["id"] if runs else None

    return poll_api(stack, found, wait, 2, f"no flow run named {name}")


def wait_for_state(stack: Stack, flow_run_id: str, wait: float = 600) -> dict:
    def finished(client):
        run = client.get(f"/flow_runs/{flow_run_id}").json()
        return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return poll_api(stack, finished, wait, 2, f"flow run {flow_run_id} did not finish")


def mlflow_run_for(stack: Stack, flow_run_id: str) -> dict:
    with httpx.Client(base_url=f"{stack.mlflow_url}/api/2.0/mlflow", timeout=30) as client:
        experiments = client.get("/experiments/search", params={"max_results": 100}).json()["experiments"]
        runs = client.post("/runs/search", json={
            "experiment_ids": [e["experiment_id"] for e in experiments],
            "filter": f"tags.prefect_flow_run_id = '{flow_run_id}'",
        }).json()
    assert runs.get("runs"), f"no MLflow run tagged with Prefect flow run {flow_run_id}"
    return runs["runs"][0]


def test_a_taken_port_or_a_used_state_folder_is_refused(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"port {port} .* is taken.*--prefect-port"):
            check_ports(Stack(prefect_port=port, mlflow_port=free_port()))
    first = lock_state(tmp_path)
    with pytest.raises(StartupError, match="in use by another `evoforge ui`"):
        lock_state(tmp_path)
    first.close()


def test_the_scheduler_creates_a_run_that_completes(stack):
    """Catches silent scheduler breakage (e.g. SQLAlchemy 2.1 creates no cron runs at all)."""
    nightly = deployment_id(stack, "evolution_run", "nightly")
    with api(stack) as client:
        # A minute of schedule, the scheduler's 60 s loop and the runner's start, with room for a 3x slower machine.
        deadline = time.monotonic() + 480
        scheduled = []
        while time.monotonic() < deadline and not scheduled:
            scheduled = client.post("/flow_runs/filter", json={
                "deployments": {"id": {"any_": [nightly]}},
                "flow_runs": {"state": {"type": {"any_": ["RUNNING", "COMPLETED", "PENDING"]}}},
                "sort": "START_TIME_ASC", "limit": 1,
            }).json()
            time.sleep(2)
        assert scheduled, "the every-minute schedule started no run within 8 minutes"
        run = wait_for_state(stack, scheduled[0]["id"])
        # Stop the every-minute schedule: the other tests get the machine to themselves.
        client.patch(f"/deployments/{nightly}", json={"paused": True})
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["auto_scheduled"] is True
    tracked = mlflow_run_for(stack, run["id"])
    assert any(m["key"] == "qd_score" for m in tracked["data"]["metrics"])


def test_a_run_triggered_over_rest_uses_its_parameters(stack):
    nightly = deployment_id(stack, "evolution_run", "nightly")
    config = {**TINY, "batch_size": 3, "run_name": "from-rest"}
    with api(stack) as client:
        created = client.post(f"/deployments/{nightly}/create_flow_run", json={"parameters": {"config": config}})
        assert created.status_code == 201, created.text
    run = wait_for_state(stack, created.json()["id"])
    assert run["state"]["type"] == "COMPLETED", run["state"]
    saved = json.loads((Path(stack.root) / "runs" / "from-rest" / "config.json").read_text())
    assert saved["batch_size"] == 3 and saved["generations"] == 1
    tracked = mlflow_run_for(stack, run["id"])
    params = {p["key"]: p["value"] for p in tracked["data"]["params"]}
    assert params["batch_size"] == "3" and params["run_name"] == "from-rest"
    tags = {t["key"]: t["value"] for t in tracked["data"]["tags"]}
    assert tags["prefect_flow_run_url"].startswith(stack.prefect_url)
    with httpx.Client(base_url=f"{stack.mlflow_url}/api/2.0/mlflow", timeout=30) as client:  # as the UI lists them
        listed = {f["path"] for folder in ("plots", "data") for f in client.get(
            "/artifacts/list", params={"run_id": tracked["info"]["run_id"], "path": folder}).json().get("files", [])}
    assert {"plots/archive_heatmap.png", "plots/qd_curve.png", "data/candidates.parquet"} <= listed
    with api(stack) as client:  # the flow run's page carries the summary and the elites table
        artifacts = client.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    kinds = {a["key"]: a for a in artifacts}
    assert {"evolution-summary", "top-elites"} <= set(kinds)
    assert tracked["info"]["run_id"] in kinds["evolution-summary"]["data"]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright's own browser download fails offline
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_browser_run_started_in_the_prefect_ui_shows_in_mlflow(stack, tmp_path):
    """A person's path: find the deployment in the Prefect UI, start a custom run with a changed parameter, wait
    for it, follow the summary's link to the MLflow UI and see the run's qd_score there."""
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("EVOFORGE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{stack.prefect_url}/deployments", wait_until="networkidle")
        page.screenshot(path=shots / "prefect-deployments.png")
        page.get_by_role("link", name="nightly").click()
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run").click()
        page.wait_for_url("**/run?**")
        # The form is built from RunConfig: each field with its description; the first "Batch Size" is the run's.
        expect(page.get_by_text("Candidates written per generation (all experts)").first).to_be_visible()
        page.locator("xpath=//*[normalize-space(text())='Run Name']/following::input[1]").first.fill("from-the-browser")
        page.locator("xpath=//*[normalize-space(text())='Batch Size (Optional)']/following::input[1]").first.fill("3")
        page.screenshot(path=shots / "prefect-custom-run.png")
        page.get_by_role("button", name="Submit").click()
        page.wait_for_url("**tab=Runs")
        flow_run_id = flow_run_named(stack, "from-the-browser")  # the submission reached the server
        page.reload(wait_until="networkidle")  # the list polls; on a loaded machine a reload shows it sooner
        link = page.get_by_role("link", name="from-the-browser").first
        expect(link).to_be_visible(timeout=120_000)
        link.click()
        page.wait_for_url(f"**/runs/flow-run/{flow_run_id}**")
        assert wait_for_state(stack, flow_run_id)["state"]["type"] == "COMPLETED"
        page.reload(wait_until="networkidle")
        expect(page.get_by_text("Completed").first).to_be_visible()
        page.get_by_role("tab", name="Artifacts").click() if page.get_by_role("tab", name="Artifacts").count() \
            else page.get_by_text("Artifacts", exact=True).click()
        page.get_by_text("evolution-summary").click()
        mlflow_link = page.locator(f"a[href^='{stack.mlflow_url}']").first
        expect(mlflow_link).to_be_visible()
        page.screenshot(path=shots / "prefect-summary.png")
        page.goto(mlflow_link.get_attribute("href"), wait_until="load")
        expect(page.get_by_text("qd_score").first).to_be_visible(timeout=30000)
        page.screenshot(path=shots / "mlflow-run.png")
        browser.close()
    with api(stack) as client:
        parameters = client.get(f"/flow_runs/{flow_run_id}").json()["parameters"]
    assert parameters["config"]["batch_size"] == 3  # the edited value reached the flow run
    tracked = mlflow_run_for(stack, flow_run_id)
    assert {p["key"]: p["value"] for p in tracked["data"]["params"]}["batch_size"] == "3"


def test_the_runner_stops_within_seconds_with_a_run_in_flight_and_the_run_resumes(stack):
    """SIGTERM (as `evoforge ui` sends it) reaches the runner mid-run: the runner exits at once instead of waiting for
    the run, the run ends Cancelled (or Crashed), not Running, keeps its committed generations, and resumes."""
    nightly = deployment_id(stack, "evolution_run", "nightly")
    config = {**TINY, "generations": 100, "run_name": "interrupted", "out": str(Path(stack.root) / "runs")}
    with api(stack) as client:
        client.patch(f"/deployments/{nightly}", json={"paused": True})  # no scheduled run takes the one slot
        created = client.post(f"/deployments/{nightly}/create_flow_run", json={"parameters": {"config": config}})
    state_file = Path(stack.root) / "runs" / "interrupted" / "state.json"
    deadline = time.monotonic() + 600
    while not (state_file.exists() and json.loads(state_file.read_text())["completed"] >= 1):
        assert time.monotonic() < deadline, "the run committed no generation within 10 minutes"
        time.sleep(1)
    runner = stack.processes["runner"]
    runner.send_signal(signal.SIGTERM)
    # Prefect gives a flow run 30 s to exit after SIGTERM before killing it; on any machine the runner is done well
    # before this bound, where before it waited for the run (up to 100 generations) or left it Running.
    assert runner.wait(120) == 0
    run = wait_for_state(stack, created.json()["id"], wait=60)
    assert run["state"]["type"] in ("CANCELLED", "CRASHED"), run["state"]
    committed = json.loads(state_file.read_text())["completed"]
    first = pd.read_parquet(Path(stack.root) / "runs" / "interrupted" / "candidates" / "gen_0000.parquet")

    start_runner(stack, cron="", timezone="UTC")  # as `evoforge ui` started again; no schedule: this test's run only
    with api(stack) as client:
        again = client.post(f"/deployments/{nightly}/create_flow_run",
                            json={"parameters": {"config": {**config, "generations": committed + 1}}})
    run = wait_for_state(stack, again.json()["id"])
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert json.loads(state_file.read_text())["completed"] == committed + 1  # one more generation, none redone
    assert pd.read_parquet(Path(stack.root) / "runs" / "interrupted" / "candidates" / "gen_0000.parquet").equals(first)


def test_ui_started_with_sigint_ignored_stops_within_seconds_with_a_run_in_flight(tmp_path):
    """A script that starts `evoforge ui` in the background gives it SIGINT ignored, which its children inherit; it
    sent SIGINT to each child and gave each 30 s, and the runner it then sent SIGTERM left its flow run Running.
    Now SIGTERM stops it all within seconds, and the run in flight ends Cancelled (or Crashed)."""
    prefect_port, mlflow_port = free_port(), free_port()
    ui = [sys.executable, "-m", "app.cli", "ui", "--prefect-port", str(prefect_port), "--mlflow-port",
          str(mlflow_port), "--state", str(tmp_path / ".state"), "--cron", ""]
    ignoring = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "os.execv(sys.executable, sys.argv[1:])")  # exec keeps an ignored signal ignored
    process = subprocess.Popen([sys.executable, "-c", ignoring, *ui], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        output = []
        for line in process.stdout:  # until it says it is up (or exits)
            output.append(line)
            if "Ctrl-C stops all" in line:
                break
        assert process.poll() is None, "".join(output)
        with prefect_client(f"http://127.0.0.1:{prefect_port}") as client:
            deadline = time.monotonic() + 300
            while (found := client.get("/deployments/name/evolution_run/nightly")).status_code != 200:
                assert time.monotonic() < deadline, "the runner registered no deployment within 5 minutes"
                time.sleep(1)
            config = {**TINY, "generations": 100, "run_name": "cut", "out": str(tmp_path / "runs")}
            created = client.post(f"/deployments/{found.json()['id']}/create_flow_run",
                                  json={"parameters": {"config": config}})
            assert created.status_code == 201, created.text
            flow_run_id = created.json()["id"]
        state_file = tmp_path / "runs" / "cut" / "state.json"
        deadline = time.monotonic() + 600
        while not (state_file.exists() and json.loads(state_file.read_text())["completed"] >= 1):
            assert time.monotonic() < deadline, "the run committed no generation within 10 minutes"
            time.sleep(1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0  # within seconds on any machine; Prefect kills a run that is slow after 30 s
        for port in (prefect_port, mlflow_port):  # both servers are gone, not orphaned
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on {port}"
    finally:
        if process.poll() is None:  # a failed check: stop it (and its servers) all the same, or kill it
            process.terminate()
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
    # The Prefect server is stopped: its database says how the run ended.
    with sqlite3.connect(tmp_path / ".state" / "prefect" / "prefect.db") as db:
        (state,) = db.execute("SELECT state_type FROM flow_run WHERE id = ?", (flow_run_id,)).fetchone()
    assert state in ("CANCELLED", "CRASHED")
    assert json.loads(state_file.read_text())["completed"] >= 1


def test_prefect_yaml_deployments_run_on_a_process_worker(stack):
    """The work-pool route (runs last: it stops the runner and replaces `nightly`): deployments/prefect.yaml is
    registered on a process pool, and a worker runs a flow run of it."""
    runner = stack.processes.pop("runner")  # the pool's worker, not the runner, must take the run
    runner.send_signal(signal.SIGTERM)
    runner.wait(120)  # it exits within seconds, runs in flight or not (see the test above); room for a slow machine
    env = {**stack.env(), "MLFLOW_TRACKING_URI": stack.mlflow_url}
    bin_dir = Path(sys.executable).parent
    deployed = subprocess.run([sys.executable, "-m", "deployments.deploy"], env=env, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with api(stack) as client:
        nightly = client.get("/deployments/name/evolution_run/nightly").json()
        schedules = client.get(f"/deployments/{nightly['id']}/schedules").json()
        assert nightly["work_pool_name"] == "evoforge"
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in schedules] == [("0 2 * * *", "Europe/Berlin")]
        assert nightly["parameters"]["config"]["generations"] == 8
        created = client.post(f"/deployments/{nightly['id']}/create_flow_run",
                              json={"parameters": {"config": {**TINY, "run_name": "from-the-pool",
                                                              "out": str(Path(stack.root) / "runs")}}}).json()
    worker = subprocess.run([str(bin_dir / "prefect"), "worker", "start", "--pool", "evoforge", "--run-once"],
                            env=env, capture_output=True, text=True, cwd=stack.root, timeout=600)
    run = wait_for_state(stack, created["id"], wait=60)
    assert run["state"]["type"] == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
    assert json.loads((Path(stack.root) / "runs" / "from-the-pool" / "state.json").read_text())["completed"] == 1
