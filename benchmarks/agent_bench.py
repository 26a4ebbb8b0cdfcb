"""Search agents in real runs: each strategy and the manager against plain sampling, at equal judge calls.

    .venv/bin/python benchmarks/agent_bench.py [--domains opinions stories] [--seeds 0 1] [--generations 2]

Runs the real `evolution_run` flow per domain, seed and arm in one process (models and the fitted panel shared):
`sample` (today), `beam`, `tot`, `mcts` (`strategy`), and `manager` (the bandit over (sample, tot) x experts). Every
arm judges batch_size candidates per generation, so final QD is compared at equal judge calls. tot, mcts and the
manager value texts with a value model trained across runs (`evoforge train-world`'s fit) on the domain's `sample`
runs of this benchmark (run first), plus for opinions the checked-in run tests/data/opinions-s0-run. Reports per
arm: final QD score, coverage, mean judged quality (means and 95% intervals over seeds), judge calls, generated
tokens (a tree search's count every expansion and rollout) and the generations' wall time. Writes
benchmarks/results/<date>-<host>-agents.json and prints the Markdown table.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.judges.panel import questions  # noqa: E402  (evoforge first: telemetry off, Prefect's start-up wait)

ARMS = ["sample", "beam", "tot", "mcts", "manager"]
TREE = dict(width=2, k=2, iterations=3, sentence_tokens=16, max_steps=3)


def run_record(run_dir: Path, arm: str) -> dict:
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain

    config = RunConfig(**json.loads((run_dir / "config.json").read_text()))
    history = json.loads((run_dir / "state.json").read_text())["history"]
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    judged = candidates[candidates["quality"].notna()]
    record = {
        "arm": arm, "domain": config.domain, "seed": config.seed, "run_dir": str(run_dir),
        "qd_score": history[-1]["qd_score"], "coverage": history[-1]["coverage"],
        "mean_quality": float(judged["quality"].mean()) if len(judged) else float("nan"),
        "judge_calls": int(sum(h["judge_calls"] for h in history)),
        "judged_texts": len(judged), "per_text": len(config.judges) * len(questions(load_domain(config.domain))),
        "tokens": int(sum(h["tokens_generated"] for h in history)),
        "wall_s": float(sum(h["seconds_total"] for h in history)),
    }
    if "strategy" in candidates:
        record["strategies"] = candidates["strategy"].value_counts().to_dict()
    return record


def arm_config(arm: str, domain: str, seed: int, args, out: Path, stamp: str, world: str | None):
    from evoforge.core.config import RunConfig

    extra = {}
    if arm in ("beam", "tot", "mcts"):
        extra["strategy"] = arm
    if arm == "manager":
        extra["manager"] = {"enabled": True, "strategies": ["sample", "tot"]}
    if arm in ("tot", "mcts", "manager") and world:
        extra["value_model"] = world
    return RunConfig(domain=domain, seed=seed, out=str(out), heldout_judge=False, experts=2,
                     generations=args.generations, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     tree=TREE, run_name=f"{domain}-{arm}-s{seed}-{stamp}", experiment="evoforge-agents", **extra)


def table(records: list[dict]) -> str:
    """Per domain and arm, means over seeds (a run each): final QD with its 95% interval, coverage, the judged
    texts' mean quality, and per run the judge calls, generated tokens and the generations' wall time."""
    from benchmarks.science import interval

    frame = pd.DataFrame(records)
    frame["order"] = frame["arm"].map(ARMS.index)
    lines = ["| domain | arm | seeds | QD score (mean, 95% CI) | coverage | judged quality | judge calls per run | "
             "tokens per run | generation wall s per run |", "|---|---|---|---|---|---|---|---|---|"]
    for (domain, _, arm), rows in frame.groupby(["domain", "order", "arm"], sort=True):
        qd = interval(rows["qd_score"])
        lines.append(f"| {domain} | {arm} | {len(rows)} | {qd[0]:.2f} ({qd[1]:.2f}-{qd[2]:.2f}) | "
                     f"{rows['coverage'].mean():.0%} | {rows['mean_quality'].mean():.3f} | "
                     f"{rows['judge_calls'].mean():.0f} | {rows['tokens'].mean():,.0f} | {rows['wall_s'].mean():.0f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domains", nargs="+", default=["opinions", "stories"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    p.add_argument("--generations", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report", nargs="+", metavar="RUN_DIR", help="no runs: report these finished run folders")
    args = p.parse_args(argv)
    if args.report:  # a benchmark stopped early: its finished runs (the arm is in the run name)
        from benchmarks.machine import machine_info, save_table

        records = [run_record(Path(d), next(a for a in ARMS if f"-{a}-s" in Path(d).name)) for d in args.report]
        payload = {"machine": {**machine_info(), "note": "reported from run folders"},
                   "budget": {**vars(args), "tree": TREE}, "records": records, "table": table(records)}
        save_table(args.results, "agents", payload)
        return payload
    out = Path(args.out or tempfile.mkdtemp(prefix="evoforge-agents-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    import torch

    from benchmarks.machine import machine_at_start, save_table
    from evoforge.steps.world_model import fit_world_model, save_world_model
    from flows.evolution import evolution_run
    from models.embedder import load_embedder
    from models.loading import load_backend

    torch.set_num_threads(args.threads)
    machine = machine_at_start()
    load_backend("smollm2", "auto")  # once: every run's own load_backend call returns this copy
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    started, records = time.perf_counter(), []
    for domain in args.domains:
        world = None
        for arm in ["sample"] + [a for a in args.arms if a != "sample"]:
            if arm != "sample" and world is None and {"tot", "mcts", "manager"} & set(args.arms):
                runs = [r["run_dir"] for r in records if r["domain"] == domain and r["arm"] == "sample"]
                runs += [str(ROOT / "tests" / "data" / "opinions-s0-run")] if domain == "opinions" else []
                model = fit_world_model(runs, load_embedder("minilm"))
                world = str(save_world_model(model, out / f"world-{domain}.joblib"))
                print(f"{domain}: value model on {model.rows} rows, held-out {json.dumps(model.heldout)}", flush=True)
            for seed in args.seeds:
                summary = evolution_run(arm_config(arm, domain, seed, args, out, stamp, world))
                records.append(run_record(Path(summary["run_dir"]), arm))
                r = records[-1]
                print(f"{domain} {arm} seed {seed}: QD {r['qd_score']:.2f}, coverage {r['coverage']:.0%}, "
                      f"{r['judge_calls']} judge calls, {r['tokens']} tokens, {r['wall_s']:.0f} s", flush=True)
    payload = {"machine": machine, "budget": {**vars(args), "tree": TREE}, "records": records,
               "table": table(records), "seconds": time.perf_counter() - started}
    save_table(args.results, "agents", payload)
    return payload


if __name__ == "__main__":
    main()
