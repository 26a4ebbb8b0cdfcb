"""End to end: a one-population run whose generations are judged in 2 shards (`judge_shards`), each a `judge-shard`
Prefect task on a real local Dask cluster of 2 worker processes, against the same run judged in the flow's
process: the real `evolution_run` flow, real models (float32), MLflow and Parquet.

Scores compare with a tolerance, the rest exactly: a shard is its own batch, so float32 sums run in another order
(at most 2.5e-6 on the 2-core Xeon, tests/judges/test_judge_shards.py); the texts, experts, cells and elites are
what must not change.
"""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

# 1 population x 6 candidates x 2 generations, judged by the default panel (calibrated and weighed on the
# references, so fitted calibrators and weights travel with each shard's task).
RUN = dict(generations=2, experts=2, batch_size=6, max_new_tokens=8, continue_tokens=0, seed=4, heldout_judge=False,
           precision="float32")
TOLERANCE = 1e-4
EXACT = ["cid", "generation", "expert_id", "text", "valid", "inserted", "status"]


@pytest.mark.slow
def test_a_generation_judged_in_shards_on_two_workers_matches_judging_it_in_one_process(prefect_server, tmp_path):
    from distributed import Client, LocalCluster

    from flows.evolution import evolution_run

    evolution_run(RunConfig(**RUN, out=str(tmp_path), run_name="whole"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        summary = evolution_run(RunConfig(**RUN, judge_shards=2, cluster=cluster.scheduler_address, out=str(tmp_path),
                                          run_name="sharded"))
        # The shards were judged on the workers, by the model each worker process loaded once (before generation
        # 0) and kept: one load (a miss) per process, and a hit per judge-shard task there (2 generations x 2).
        caches = client.run(lambda: __import__("models.loading").loading._local_backend.cache_info()[:2])
    assert all(misses == 1 for _, misses in caches.values()), caches
    assert sum(hits for hits, _ in caches.values()) == 2 * 2, caches
    assert summary["generations"] == 2
    # Without the generation subflow, MLflow still gets a child run per generation under the run.
    mlflow = MlflowClient(tracking_uri())
    run = mlflow.get_run(summary["mlflow_run_id"])
    children = mlflow.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["generation-0000", "generation-0001"]
    assert run.data.params["judge_shards"] == "2"

    whole = pd.read_parquet(tmp_path / "whole" / "candidates.parquet")
    sharded = pd.read_parquet(tmp_path / "sharded" / "candidates.parquet")
    assert list(sharded.columns) == list(whole.columns) and len(sharded) == 2 * 6
    pd.testing.assert_frame_equal(sharded[EXACT], whole[EXACT])
    scores = [c for c in whole.columns if c == "quality" or c.startswith(("measure_", "judge_", "raw_"))]
    assert {"quality", "measure_sentiment", "judge_chat0_quality", "judge_emb_sentiment"} <= set(scores)
    pd.testing.assert_frame_equal(sharded[scores], whole[scores], check_exact=False, atol=TOLERANCE, rtol=0)

    for part in ("archive.parquet", "archive/gen_0001.parquet"):
        ours, theirs = (pd.read_parquet(tmp_path / run / part) for run in ("sharded", "whole"))
        exact = [c for c in theirs.columns if c != "quality" and not c.startswith("measure_")]
        pd.testing.assert_frame_equal(ours[exact], theirs[exact])
        pd.testing.assert_frame_equal(ours.drop(columns=exact), theirs.drop(columns=exact), check_exact=False,
                                      atol=TOLERANCE, rtol=0)


def test_workers_start_without_dasks_malloc_trim_setting():
    """The run's local cluster (flows.engine) and hand-started workers (deployments/dask, through DASK_CONFIG) both
    drop MALLOC_TRIM_THRESHOLD_ from what Dask sets before it spawns a worker, and keep one thread per worker."""
    from pathlib import Path

    import dask
    from distributed.nanny import _get_env_variables

    from flows.engine import NO_MALLOC_TRIM

    key = "distributed.nanny.pre-spawn-environ"
    assert "MALLOC_TRIM_THRESHOLD_" in _get_env_variables(key)  # Dask's default, which both must remove
    folder = Path(__file__).resolve().parents[2] / "deployments" / "dask"
    from_folder = dask.config.merge(dask.config.config, dask.config.collect(paths=[str(folder)], env={}))
    for settings in (NO_MALLOC_TRIM, from_folder):  # DASK_CONFIG's files are merged over Dask's defaults
        with dask.config.set(settings):
            environ = _get_env_variables(key)
        assert "MALLOC_TRIM_THRESHOLD_" not in environ and environ["OMP_NUM_THREADS"] == "1"
