"""Islands on Dask: what a second island on a second worker buys, and what the engine costs per task.

    .venv/bin/python benchmarks/islands_bench.py [--seconds 240] [--quick]

Rows:
- `1 island` (the flow's own process, as `evoforge run`) against `2 islands, 2 workers` (a local Dask cluster of two
  worker processes started by the run), both through the real `evolution_run` flow, at equal wall time: each run's
  generations stop at the same `budget.max_seconds`. QD score, coverage, candidates and candidates per hour; the
  wall time of the whole command too (the cluster's start-up and its workers' model loading are in it).
- scheduling overhead: the round trip of an empty Prefect task (submit -> result) through the `DaskTaskRunner` on a
  2-worker local cluster, beside the same through Prefect's default thread pool and a bare Dask `client.submit`
  (no Prefect): what each island task pays before any model work.
- the run-level costs that grow with the number of islands: the union archive of K islands (`union_archive`) and
  logging K islands' per-generation metrics to MLflow (one `log_batch`), for K up to 100.
- judging split across workers (`judge_shards`): one generation of 64 texts judged by the run's default panel
  (fitted on the references) in the flow's process, against 2 shards as `judge-shard` Prefect tasks on a local
  cluster of 2 workers (`flows.evolution.judge_in_shards`, the run's own path), and the same 2 shards as bare Dask
  `client.submit` calls (no Prefect): their difference is Prefect's cost per judging task. `--part judging` runs
  this row alone and writes <date>-<host>-islands-judging.json.
Writes benchmarks/results/<date>-<host>-islands.json and prints a Markdown table.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.machine import machine_at_start, machine_info, save_table  # noqa: E402

# Small enough for a 2-core machine; each island writes `batch_size` candidates per generation.
RUN = dict(experts=2, batch_size=8, max_new_tokens=32, continue_tokens=8, judge_references=False, seed=0,
           generations=1000)


def run_at_budget(folder: str, seconds: float, **settings) -> dict:
    from mlflow.tracking import MlflowClient

    from evoforge.core.config import RunConfig
    from evoforge.core.tracking import tracking_uri
    from flows.evolution import evolution_run

    config = RunConfig(**{**RUN, **settings}, budget={"max_seconds": seconds}, out=folder,
                       run_name=f"islands{settings.get('islands', 1)}")
    started = time.perf_counter()
    state = evolution_run(config, return_state=True)
    wall = time.perf_counter() - started
    summary = state.result()
    history = MlflowClient(tracking_uri()).get_metric_history(summary["mlflow_run_id"], "seconds_total")
    generations_s = sum(m.value for m in history)
    import pandas as pd

    candidates = len(pd.read_parquet(Path(folder) / config.run_name / "candidates.parquet"))
    return {"islands": config.islands, "generations": summary["generations"], "candidates": candidates,
            "qd_score": summary["qd_score"], "coverage": summary["coverage"], "generations_s": generations_s,
            "candidates_per_hour": 3600 * candidates / generations_s, "wall_s": wall}


def task_overhead(n: int) -> dict:
    """Seconds per round trip of an empty task: Prefect on Dask, Prefect's thread pool, bare Dask."""
    from distributed import Client, LocalCluster
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    @task(cache_policy=NO_CACHE)
    def empty():
        return None

    @flow
    def round_trips(count: int) -> float:
        empty.submit().result()  # the first connects and warms up
        started = time.perf_counter()
        for _ in range(count):
            empty.submit().result()
        return (time.perf_counter() - started) / count

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        on_dask = round_trips.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))(n)
        with Client(cluster) as client:
            client.submit(int, 0, pure=False).result()
            started = time.perf_counter()
            for i in range(n):
                client.submit(int, i, pure=False).result()
            bare = (time.perf_counter() - started) / n
    in_threads = round_trips.with_options(task_runner=ThreadPoolTaskRunner())(n)
    return {"prefect_on_dask_s": on_dask, "prefect_thread_pool_s": in_threads, "bare_dask_s": bare}


def merge_costs(ks: list[int], elites_per_island: int = 400) -> list[dict]:
    """Union of K islands' archives (a 2-axis 20x20 grid, each island full) and one MLflow log_batch of K islands'
    per-island metrics (5 each, plus 2 experts' values)."""
    from evoforge.core.archive import QDArchive
    from evoforge.core.tracking import Tracker
    from evoforge.steps.islands import Island, union_archive

    bins = [list(np.linspace(0.05, 0.95, 19))] * 2
    rows = []
    rng = np.random.default_rng(0)
    tracker = Tracker("islands-bench", "merge-costs")
    for k in ks:
        islands = []
        for i in range(k):
            archive = QDArchive(["a", "b"], bins)
            cids = np.arange(i * elites_per_island, (i + 1) * elites_per_island)
            archive.add(cids, [f"text {c}" for c in cids], rng.random(len(cids)), rng.random((len(cids), 2)), 0)
            islands.append(Island(i, archive, [], []))
        started = time.perf_counter()
        union_archive(islands)
        union_s = time.perf_counter() - started
        metrics = {f"island/{i}/{name}": float(rng.random()) for i in range(k)
                   for name in ("qd_score", "coverage", "num_elites", "inserted", "expert/0/value", "expert/1/value",
                                "seconds")}
        started = time.perf_counter()
        tracker.log_metrics(metrics, step=k)
        rows.append({"islands": k, "union_s": union_s, "mlflow_metrics": len(metrics),
                     "mlflow_log_s": time.perf_counter() - started})
    tracker.finish("FINISHED")
    return rows


def median_s(call, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call (which pays the one-off costs: the embedder's first
    batch, a task's first connection)."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def judging_split(texts_n: int = 64, repeats: int = 3) -> dict:
    """Median seconds to judge `texts_n` texts: in this process, in 2 shards of Prefect tasks on 2 Dask workers, and
    in 2 shards of bare Dask calls; every model and the panel are loaded and fitted before the clock starts. Runs
    as a flow of its own with small parameters (each task carries its flow and their values to the worker), made
    here and not at import: Prefect reads PREFECT_HOME when imported, and main sets it first."""
    from prefect import flow

    return flow(name="judging-split")(_judging_split)(texts_n, repeats)


def _judging_split(texts_n: int, repeats: int) -> dict:
    import pickle

    import pandas as pd

    from evoforge.core.config import RunConfig, judge_models
    from evoforge.core.domain import load_domain
    from evoforge.steps.evolution import contiguous_shards, make_panel
    from flows.engine import dask_task_runner
    from flows.evolution import judge_in_shards
    from models.loading import load_backend
    from tasks.evolution import judge_shard

    config = RunConfig(judge_shards=2, workers=2)
    domain = load_domain(config.domain)
    texts = (domain.load_references()["text"].tolist() + domain.load_pool())[:texts_n]
    backends = {name: load_backend(name, config.precision, config.device) for name in judge_models(config.judges)}
    panel = make_panel(config, domain, backends)
    candidates = pd.DataFrame({"text": texts, "valid": True})
    shards = contiguous_shards(texts, config.judge_shards)

    in_process = median_s(lambda: panel.judge(backends, texts), repeats)
    with dask_task_runner(config, sorted(judge_models(config.judges))) as runner:
        prefect_s = median_s(lambda: judge_in_shards(panel, candidates, backends, runner, config), repeats)
        client = runner.client
        bare_s = median_s(lambda: client.gather([client.submit(judge_shard.fn, panel, shard, config.precision,
                                                               config.device, pure=False) for shard in shards]),
                          repeats)
    return {"texts": len(texts), "repeats": repeats, "precision": config.precision, "in_process_s": in_process,
            "shards_prefect_s": prefect_s, "shards_bare_dask_s": bare_s, "speedup": in_process / prefect_s,
            "prefect_per_task_s": prefect_s - bare_s, "panel_pickle_bytes": len(pickle.dumps(panel)),
            "texts_pickle_bytes_per_shard": max(len(pickle.dumps(shard)) for shard in shards)}


def judging_table(j: dict) -> list[str]:
    return ["| judging one generation of 64 texts | s | vs 1 process |", "|---|---|---|",
            f"| 1 process (the flow's) | {j['in_process_s']:.1f} | 1.00 |",
            f"| 2 shards, Prefect tasks on 2 Dask workers | {j['shards_prefect_s']:.1f} | "
            f"{j['speedup']:.2f}x |",
            f"| 2 shards, bare Dask client.submit | {j['shards_bare_dask_s']:.1f} | "
            f"{j['in_process_s'] / j['shards_bare_dask_s']:.2f}x |",
            f"| Prefect's cost per judging task (the two above's difference) | {j['prefect_per_task_s']:.2f} | |",
            f"| shipped per task: the fitted panel {j['panel_pickle_bytes'] / 1000:.1f} kB, the texts "
            f"{j['texts_pickle_bytes_per_shard'] / 1000:.1f} kB | | |"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=240, help="each run's budget.max_seconds (its generations)")
    p.add_argument("--tasks", type=int, default=30, help="empty tasks timed per engine")
    p.add_argument("--quick", action="store_true", help="60 s runs, 10 tasks, K up to 10 (a smoke run)")
    p.add_argument("--part", choices=["all", "judging"], default="all",
                   help="judging: only the judging split across workers (about 5 minutes)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    seconds, n, ks = (60, 10, [2, 10]) if args.quick else (args.seconds, args.tasks, [2, 10, 100])
    folder = tempfile.mkdtemp(prefix="islands-bench-")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    os.environ.setdefault("PREFECT_HOME", f"{folder}/prefect")
    from app.prefect_api import ensure_prefect_api

    ensure_prefect_api()
    if args.part == "judging":
        machine = machine_at_start()
        judging = judging_split()
        payload = {"machine": machine, "judging": judging, "table": "\n".join(judging_table(judging))}
        save_table(args.out, "islands-judging", payload)
        return payload
    runs = [run_at_budget(folder, seconds, islands=1), run_at_budget(folder, seconds, islands=2, workers=2)]
    overhead = task_overhead(n)
    merges = merge_costs(ks)
    lines = ["| run | generations | candidates | QD score | coverage | generations' s | candidates/hour | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        name = "1 island (flow process)" if r["islands"] == 1 else f"{r['islands']} islands, 2 Dask workers"
        lines.append(f"| {name} | {r['generations']} | {r['candidates']} | {r['qd_score']:.2f} | {r['coverage']:.0%} | "
                     f"{r['generations_s']:.0f} | {r['candidates_per_hour']:.0f} | {r['wall_s']:.0f} |")
    lines += ["", "| empty task round trip | ms |", "|---|---|",
              f"| Prefect task on DaskTaskRunner (2 local workers) | {1000 * overhead['prefect_on_dask_s']:.0f} |",
              f"| Prefect task on the default thread pool | {1000 * overhead['prefect_thread_pool_s']:.0f} |",
              f"| bare Dask client.submit (no Prefect) | {1000 * overhead['bare_dask_s']:.1f} |",
              "", "| islands | union archive ms | MLflow metrics per generation | MLflow log_batch ms |", "|---|---|---|---|"]
    lines += [f"| {m['islands']} | {1000 * m['union_s']:.0f} | {m['mlflow_metrics']} | {1000 * m['mlflow_log_s']:.0f} |"
              for m in merges]
    judging = judging_split()
    lines += [""] + judging_table(judging)
    payload = {"machine": machine_info(), "settings": {**RUN, "max_seconds": seconds, "tasks": n},
               "runs": runs, "task_overhead": overhead, "merge_costs": merges, "judging": judging,
               "table": "\n".join(lines)}
    save_table(args.out, "islands", payload)
    return payload


if __name__ == "__main__":
    main()
