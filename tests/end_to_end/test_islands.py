"""End to end: island runs through the real `evolution_run` flow, with each island's generation a Prefect task on a
real Dask cluster of 2 worker processes (prefect-dask), real models, MLflow and Parquet.

Runs compare in float32 (bfloat16 kernels round differently across CPUs; both runs here are on one CPU anyway).
"""

import json
import os
import signal
import threading
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

pytestmark = pytest.mark.slow

# 2 islands x 2 candidates x 3 generations; a migration after generation 1 (interval 2), none after 0 or 2.
ISLANDS = dict(generations=3, experts=2, batch_size=2, max_new_tokens=8, continue_tokens=0, seed=3, islands=2,
               workers=2, migration_interval=2, migrants=2, judge_references=False, heldout_judge=False,
               precision="float32")
SAME = ["cid", "island", "generation", "expert_id", "text", "quality", "measure_sentiment", "inserted", "status"]


def metric_history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def reference(prefect_server, tmp_path_factory):
    """An undisturbed island run on a local cluster that the run starts and stops itself (`workers`)."""
    from flows.evolution import evolution_run

    out = tmp_path_factory.mktemp("islands")
    started = time.perf_counter()
    summary = evolution_run(RunConfig(**ISLANDS, out=str(out), run_name="reference"))
    return summary, out / "reference", time.perf_counter() - started


def test_an_island_run_evolves_two_islands_migrates_on_schedule_and_logs_each_island(reference):
    summary, run_dir, _ = reference
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    assert len(candidates) == 3 * 2 * 2 and candidates["cid"].is_unique
    assert candidates.groupby(["generation", "island"]).size().tolist() == [2] * 6
    experts = pd.read_parquet(run_dir / "experts.parquet")
    assert experts.groupby(["generation", "island"]).size().tolist() == [2] * 6

    # Migration after generation 1 only; with two islands the ring sends each to the other.
    assert sorted(p.name for p in (run_dir / "migrations").iterdir()) == ["gen_0001.parquet"]
    moved = pd.read_parquet(run_dir / "migrations" / "gen_0001.parquet")
    assert len(moved) and (moved["target"] == 1 - moved["source"]).all()
    after = pd.read_parquet(run_dir / "islands" / "gen_0001.parquet")
    for row in moved[moved["inserted"]].itertuples():  # a migrant the receiver took is among its elites
        assert row.cid in set(after.loc[after["island"] == row.target, "cid"])
        assert row.cid in set(candidates.loc[candidates["island"] == row.source, "cid"])  # written by its sender

    # The run's archive is the union: per cell, the best elite over the islands.
    final = pd.read_parquet(run_dir / "islands" / "gen_0002.parquet")
    union = pd.read_parquet(run_dir / "archive.parquet").set_index("cell")["quality"]
    assert union.to_dict() == pytest.approx(final.groupby("cell")["quality"].max().to_dict())
    assert summary["qd_score"] == pytest.approx(union.sum())

    client = MlflowClient(tracking_uri())
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["islands"] == "2"
    for k in (0, 1):
        qd = metric_history(client, run.info.run_id, f"island/{k}/qd_score")
        assert [step for step, _ in qd] == [0, 1, 2]
        assert qd[-1][1] == pytest.approx(final.loc[final["island"] == k, "quality"].sum())
        assert [s for s, _ in metric_history(client, run.info.run_id, f"island/{k}/coverage")] == [0, 1, 2]
    assert metric_history(client, run.info.run_id, "migrations") == [(0, 0), (1, len(moved)), (2, 0)]
    assert [s for s, _ in metric_history(client, run.info.run_id, "qd_score")] == [0, 1, 2]


def test_a_killed_worker_loses_nothing_and_a_resumed_island_run_matches_the_undisturbed_one(reference, tmp_path):
    """On a cluster the run did not start (`cluster`): a worker process is killed (SIGKILL) while it runs an
    island's generation; Dask runs that task again elsewhere and the run completes. It stops after 2 generations,
    then resumes to 3 (islands restored from the run folder). Every candidate equals the undisturbed run's."""
    from distributed import Client, LocalCluster

    from flows.evolution import evolution_run

    _, reference_dir, _ = reference
    run_dir = tmp_path / "killed"
    killed, finished = {}, threading.Event()

    def kill_a_busy_worker(client):
        """Once generation 0 is committed, SIGKILL a worker process that is running an island's task."""
        while not finished.is_set() and "pid" not in killed:
            state = run_dir / "state.json"
            if state.is_file() and json.loads(state.read_text())["completed"] >= 1:
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    killed["pid"] = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(killed["pid"], signal.SIGKILL)
            time.sleep(0.05)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        config = dict(ISLANDS, cluster=cluster.scheduler_address, out=str(tmp_path), run_name="killed")
        killer = threading.Thread(target=kill_a_busy_worker, args=(client,), daemon=True)
        killer.start()
        evolution_run(RunConfig(**{**config, "generations": 2}))
        finished.set()
        killer.join(timeout=5)
        assert "pid" in killed, "no worker was busy after generation 0"
        assert killed["pid"] not in client.run(os.getpid).values()  # that process is gone (the nanny made another)
        summary = evolution_run(RunConfig(**config))  # resume: generation 2 from the restored islands
        # Each worker process loaded the model once and kept it: a load (cache miss) per process at most, the
        # other tasks there reused it (hits).
        caches = client.run(lambda: __import__("models.loading").loading._local_backend.cache_info()[:2])
        assert all(misses <= 1 for _, misses in caches.values()) and sum(h for h, _ in caches.values()) >= 2

    assert summary["generations"] == 3
    ours = pd.read_parquet(run_dir / "candidates.parquet")[SAME]
    theirs = pd.read_parquet(reference_dir / "candidates.parquet")[SAME]
    pd.testing.assert_frame_equal(ours, theirs)
    for part in ("archive.parquet", "islands/gen_0002.parquet", "migrations/gen_0001.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / part), pd.read_parquet(reference_dir / part))
