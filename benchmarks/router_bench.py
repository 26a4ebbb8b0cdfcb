"""The router against epsilon-greedy gating, in runs and in `ask` (issue 18, "Specialists and an integrating core").

    .venv/bin/python benchmarks/router_bench.py [--parts runs ask] [--seeds 0 1 2]

`runs`: the real `evolution_run` flow per domain (opinions, stories), seed and arm, in one process (models and the
fitted panel shared). Both arms aim every candidate at a target niche drawn the same way (`search: target`) and
spend the same budget (generations x batch_size candidates, the same judges); they differ only in who writes it:
`epsilon` (the gating policy: epsilon-greedy over one value per expert, `experts_per_generation` experts share the
batch) or `router` (per candidate, the expert with the most archive-improvement credit on that and nearby cells,
epsilon-greedy on the same schedule). Reports final QD score, coverage, the judged candidates' mean quality, tokens
and the generations' wall time; per domain the router's QD ratio to epsilon with its bootstrap 95% interval over
seeds; for the router its routing metrics (share of picks to the best expert per niche, entropy). Writes
benchmarks/results/<date>-<host>-router-runs.json.

`ask`: see `ask_part` (writes ...-router-ask.json).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.judges.panel import questions  # noqa: E402  (evoforge first: telemetry off, Prefect's start-up wait)

ARMS = ["epsilon", "router"]


def run_config(arm: str, domain: str, seed: int, args, out: Path, stamp: str):
    from evoforge.core.config import RunConfig

    return RunConfig(domain=domain, seed=seed, out=str(out), heldout_judge=False, experts=args.experts,
                     generations=args.generations, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     search="target", gating={"policy": arm}, run_name=f"{domain}-{arm}-s{seed}-{stamp}",
                     experiment="evoforge-router")


def run_record(run_dir: Path, arm: str) -> dict:
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain

    config = RunConfig(**json.loads((run_dir / "config.json").read_text()))
    history = json.loads((run_dir / "state.json").read_text())["history"]
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    judged = candidates[candidates["quality"].notna()]
    metrics = [json.loads(p.read_text()) for p in sorted((run_dir / "metrics").glob("*.json"))] \
        if (run_dir / "metrics").is_dir() else []
    record = {
        "arm": arm, "domain": config.domain, "seed": config.seed, "run_dir": str(run_dir),
        "qd_score": history[-1]["qd_score"], "coverage": history[-1]["coverage"],
        "mean_quality": float(judged["quality"].mean()) if len(judged) else float("nan"),
        "judged_texts": len(judged), "per_text": len(config.judges) * len(questions(load_domain(config.domain))),
        "judge_calls": int(sum(h["judge_calls"] for h in history)),
        "tokens": int(sum(h["tokens_generated"] for h in history)),
        "wall_s": float(sum(h["seconds_total"] for h in history)),
        "experts_writing": candidates["expert_id"].value_counts().sort_index().to_dict(),
    }
    for key in ("router/best_share", "router/entropy", "router/specialists"):
        values = [m[key] for m in metrics if key in m]
        if values:
            record[key] = float(np.mean(values))
    return record


def runs_table(records: list[dict]) -> str:
    """Per domain and arm, means over seeds; the router's QD ratio to epsilon (bootstrap 95% interval)."""
    from benchmarks.science import interval, ratio_interval

    frame = pd.DataFrame(records)
    lines = ["| domain | arm | seeds | QD score (mean, 95% CI) | QD ratio to epsilon (95% CI) | coverage | judged "
             "quality | tokens per run | generation wall s per run | picks to the best expert | routing entropy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for domain, rows in frame.groupby("domain", sort=False):
        base = rows[rows["arm"] == "epsilon"]["qd_score"]
        for arm in ARMS:
            r = rows[rows["arm"] == arm]
            if not len(r):
                continue
            qd = interval(r["qd_score"])
            ratio = ratio_interval(r["qd_score"], base, rng) if len(base) else (np.nan,) * 3
            share = f"{r['router/best_share'].mean():.0%}" if "router/best_share" in r and r["router/best_share"].notna().any() else "-"
            entropy = f"{r['router/entropy'].mean():.2f}" if "router/entropy" in r and r["router/entropy"].notna().any() else "-"
            lines.append(f"| {domain} | {arm} | {len(r)} | {qd[0]:.2f} ({qd[1]:.2f}-{qd[2]:.2f}) | "
                         f"{ratio[0]:.2f} ({ratio[1]:.2f}-{ratio[2]:.2f}) | {r['coverage'].mean():.0%} | "
                         f"{r['mean_quality'].mean():.3f} | {r['tokens'].mean():,.0f} | {r['wall_s'].mean():.0f} | "
                         f"{share} | {entropy} |")
    return "\n".join(lines)


def runs_part(args, machine: dict) -> dict:
    from benchmarks.machine import save_table
    from flows.evolution import evolution_run
    from models.loading import load_backend

    out = Path(args.out or tempfile.mkdtemp(prefix="evoforge-router-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    load_backend("smollm2", "auto")  # once: every run's own load_backend call returns this copy
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    started, records = time.perf_counter(), []
    for domain in args.domains:
        for seed in args.seeds:
            for arm in ARMS:  # both arms of a seed back to back: the machine's load changes slowly
                summary = evolution_run(run_config(arm, domain, seed, args, out, stamp))
                records.append(run_record(Path(summary["run_dir"]), arm))
                r = records[-1]
                print(f"{domain} {arm} seed {seed}: QD {r['qd_score']:.2f}, coverage {r['coverage']:.0%}, "
                      f"quality {r['mean_quality']:.3f}, {r['tokens']} tokens, {r['wall_s']:.0f} s", flush=True)
                payload = {"machine": machine, "budget": vars(args), "records": records, "table": runs_table(records),
                           "seconds": time.perf_counter() - started}
                save_table(args.results, "router-runs", payload)  # after every run: a stopped benchmark keeps them
    return payload


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["runs", "ask"], choices=["runs", "ask"])
    p.add_argument("--domains", nargs="+", default=["opinions", "stories"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    import torch

    from benchmarks.machine import machine_at_start

    torch.set_num_threads(args.threads)
    machine = machine_at_start()
    results = {}
    if "runs" in args.parts:
        results["runs"] = runs_part(args, machine)
    if "ask" in args.parts:
        results["ask"] = ask_part(args, machine)
    return results


if __name__ == "__main__":
    main()
