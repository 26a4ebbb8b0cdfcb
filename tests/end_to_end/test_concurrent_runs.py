"""4 evolution runs at once against one `evoforge ui` stack: one Prefect server, one MLflow server (each on its
SQLite file), and 4 `evoforge run` processes pointed at them as a user would point them (PREFECT_API_URL,
MLFLOW_TRACKING_URI). Every run completes, and nothing is lost, mixed between runs or written twice.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from app.servers import Stack, free_port, start_servers, stop
from test_servers import api, wait_for_state

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

RUNS = 4
GENERATIONS, BATCH = 2, 4
# No reference scoring and no held-out judge: what is under test is 4 writers at once, not the judges, and 4
# processes loading SmolLM2 on 2 cores are slow enough.
TINY = {"judge_references": False, "heldout_judge": False, "continue_tokens": 0}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The servers of `evoforge ui` (as tests/end_to_end/test_servers.py starts them), without its runner: the runs
    here are `evoforge run` processes, as from a shell, not the runner's deployment runs (one at a time)."""
    root = tmp_path_factory.mktemp("concurrent")
    stack = Stack(prefect_port=free_port(), mlflow_port=free_port(), state=root / ".state", root=root)
    try:
        start_servers(stack)
        yield stack
    finally:
        stop(stack)


def test_four_runs_at_once_complete_and_nothing_is_lost_mixed_or_written_twice(servers, tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    env = {**servers.env(), "PYTHONPATH": str(ROOT)}  # the stack's PREFECT_API_URL and MLFLOW_TRACKING_URI
    names, seeds = [f"concurrent-{i}" for i in range(RUNS)], [11 + i for i in range(RUNS)]
    started = time.monotonic()
    processes = [
        subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--config", str(config), "--run-name", name,
                          "--seed", str(seed), "--generations", str(GENERATIONS), "--batch-size", str(BATCH),
                          "--experts", "2", "--max-new-tokens", "16", "--out", str(tmp_path / "runs")],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, seed in zip(names, seeds)
    ]
    outputs = [p.communicate(timeout=1800)[0] for p in processes]  # 4 model loads and runs on 2 cores: minutes
    print(f"{RUNS} concurrent runs took {time.monotonic() - started:.0f} s")
    for name, process, output in zip(names, processes, outputs):
        assert process.returncode == 0, f"{name}:\n{output[-4000:]}"

    client = MlflowClient(servers.mlflow_url)
    texts = {}
    for name, seed in zip(names, seeds):
        run_dir = tmp_path / "runs" / name
        state = json.loads((run_dir / "state.json").read_text())
        assert (state["completed"], state["logged"]) == (GENERATIONS, GENERATIONS)
        saved = json.loads((run_dir / "config.json").read_text())
        assert (saved["run_name"], saved["seed"], saved["batch_size"]) == (name, seed, BATCH)

        candidates = pd.read_parquet(run_dir / "candidates.parquet")
        assert len(candidates) == GENERATIONS * BATCH and candidates["cid"].tolist() == list(range(GENERATIONS * BATCH))
        assert candidates.groupby("generation").size().tolist() == [BATCH] * GENERATIONS
        texts[name] = {t for t in candidates["text"] if len(t.split()) >= 5}  # not an empty or one-word text

        run = client.get_run(state["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.info.run_name == name
        params = run.data.params
        assert (params["run_name"], params["seed"], params["batch_size"], params["generations"]) == \
            (name, str(seed), str(BATCH), str(GENERATIONS))
        for key in ("qd_score", "candidates", "tokens_generated"):  # each step once: nothing logged twice
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(GENERATIONS))
        assert [m.value for m in client.get_metric_history(run.info.run_id, "candidates")] == [BATCH] * GENERATIONS
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        assert sorted(c.info.run_name for c in children) == [f"generation-{g:04d}" for g in range(GENERATIONS)]
        # The MLflow server stored this run's candidates, not another's: its artifact is the run folder's file.
        logged = client.download_artifacts(run.info.run_id, "data/candidates.parquet", str(tmp_path / name))
        assert pd.read_parquet(logged)["text"].tolist() == candidates["text"].tolist()

        flow_run = wait_for_state(servers, run.data.tags["prefect_flow_run_id"], wait=60)
        assert flow_run["state"]["type"] == "COMPLETED" and flow_run["parameters"]["config"]["run_name"] == name
    # 4 runs in MLflow, one each; their candidates are their own (other seeds write other texts: a shared text of 5
    # or more sampled words would be another run's row).
    parents = client.search_runs([run.info.experiment_id], "attributes.run_name LIKE 'concurrent-%'")
    assert sorted(r.info.run_name for r in parents) == names
    for name in names:
        assert all(not texts[name] & texts[other] for other in names if other != name)
    with api(servers) as prefect:  # in Prefect: 4 run flows, each with one generation subflow per generation
        flows = prefect.post("/flow_runs/filter", json={}).json()
    by_name = pd.Series([f["name"] for f in flows]).value_counts()
    assert by_name[[f"generation-{g}" for g in range(GENERATIONS)]].tolist() == [RUNS] * GENERATIONS
    assert {f["state"]["type"] for f in flows} == {"COMPLETED"} and len(flows) == RUNS * (1 + GENERATIONS)
