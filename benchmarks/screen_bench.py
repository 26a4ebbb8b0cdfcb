"""Screening benchmark: does judging only what the value model ranks best buy more QD per judge call?

    .venv/bin/python benchmarks/screen_bench.py [--seeds 0 1 2] [--screen 3] [--generations 6] [--batch-size 8]

Runs the real `evolution_run` flow per seed twice, without screening and with `screen` (k x batch_size written,
batch_size judged), in one process (the models and the fitted panel are shared). Both arms judge batch_size
candidates per generation, so their QD curves are at equal judge calls. Reports per arm: final QD score and
coverage (mean and 95% interval over seeds), judge calls, generated tokens, wall time; for the screened arm the
judge calls it saved (the candidates it held back x the calls a judged one costs) and how many judge calls the
unscreened run needed to reach the screened run's final QD (None where it never did), and the value model's
held-out and live error. `--report RUN_DIR...` reports finished run folders (of a benchmark stopped early). Writes benchmarks/results/<date>-<host>-screen.json and prints the Markdown table.
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

from evoforge.judges.panel import judgements_per_text, questions  # noqa: E402  (evoforge first: telemetry off, Prefect's start-up wait)


def calls_to_reach(history: list[dict], target: float) -> float | None:
    """Cumulative judge calls after which a run's QD score first reached `target` (None: never)."""
    total = 0
    for h in history:
        total += h["judge_calls"]
        if h["qd_score"] >= target - 1e-9:
            return float(total)
    return None


def run_one(config) -> dict:
    from flows.evolution import evolution_run

    summary = evolution_run(config)
    return run_record(Path(summary["run_dir"]))


def run_record(run_dir: Path) -> dict:
    """One run's numbers, from its run folder alone (so a benchmark stopped early can be reported: --report).
    Wall time is the generations' own (`seconds_total` summed), without start-up and the panel's fit, which the
    first run of a process pays for the others."""
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain

    config = RunConfig(**json.loads((run_dir / "config.json").read_text()))
    history = json.loads((run_dir / "state.json").read_text())["history"]
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    per_text = judgements_per_text(config.judges, questions(load_domain(config.domain)))
    record = {
        "seed": config.seed, "screen": config.screen, "run_dir": str(run_dir), "domain": config.domain,
        "batch_size": config.batch_size, "max_new_tokens": config.max_new_tokens,
        "wall_s": float(sum(h["seconds_total"] for h in history)), "generations": len(history),
        "qd_score": history[-1]["qd_score"], "coverage": history[-1]["coverage"],
        "mean_quality": history[-1]["mean_quality"],
        "judge_calls": int(sum(h["judge_calls"] for h in history)),
        "tokens": int(sum(h["tokens_generated"] for h in history)),
        "candidates": len(candidates), "qd_curve": [h["qd_score"] for h in history],
        "calls_curve": list(np.cumsum([h["judge_calls"] for h in history]).astype(float)),
        "history": history,
    }
    if config.screen:
        out = candidates["screen"] == "out"
        record["calls_saved"] = int(out.sum()) * per_text
        metrics = [json.loads(p.read_text()) for p in sorted((run_dir / "metrics").glob("gen_*.json"))]
        fitted = [m for m in metrics if "value/mae_quality" in m]
        for key in ("value/mae_quality", "value/mae_quality_baseline", "value/mae_measure_sentiment",
                    "value/mae_measure_sentiment_baseline", "value/auc_inserted", "value/explore_mae_quality"):
            values = [m[key] for m in fitted if key in m]
            record[key] = float(np.mean(values)) if values else None
        judged = candidates[candidates["screen"].isin(["ranked", "explore"])]
        rates = judged.groupby("screen")["inserted"].mean()
        record["insert_rate_ranked"] = float(rates.get("ranked", np.nan))
        record["insert_rate_explore"] = float(rates.get("explore", np.nan))
    return record


def report(records: list[dict], machine: dict, budget: dict, seconds: float) -> dict:
    by = {(r["seed"], r["screen"]): r for r in records}
    for r in records:
        if r["screen"] and (r["seed"], 0) in by:
            r["calls_to_reach_in_unscreened"] = calls_to_reach(by[(r["seed"], 0)]["history"], r["qd_score"])
    runs = pd.DataFrame(records)
    return {"machine": machine, "budget": budget, "seeds": sorted({r["seed"] for r in records}), "seconds": seconds,
            "runs": [{k: v for k, v in r.items() if k != "history"} for r in records], "table": markdown_table(runs)}


def markdown_table(runs: pd.DataFrame) -> str:
    from benchmarks.science import interval

    lines = ["| arm | QD score (95% CI) | coverage | judge calls | judge calls saved | unscreened calls to reach "
             "its QD | tokens | wall s |", "|---|---|---|---|---|---|---|---|"]
    for screen, rows in runs.groupby("screen"):
        qd = interval(rows["qd_score"])
        arm = "no screening" if screen == 0 else f"screen {screen}x"
        reach = "-"
        if screen:
            reached = [r for r in rows["calls_to_reach_in_unscreened"]]
            reach = ", ".join("never" if r is None or pd.isna(r) else f"{r:.0f}" for r in reached)
        saved = f"{rows['calls_saved'].mean():.0f}" if screen else "-"
        lines.append(f"| {arm} | {qd[0]:.2f} ({qd[1]:.2f}-{qd[2]:.2f}) | {rows['coverage'].mean():.0%} | "
                     f"{rows['judge_calls'].mean():.0f} | {saved} | {reach} | {rows['tokens'].mean():.0f} | "
                     f"{rows['wall_s'].mean():.0f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--screen", type=int, default=3)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--domain", default="opinions")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report", nargs="+", metavar="RUN_DIR", help="no runs: report these finished run folders")
    args = p.parse_args(argv)
    if args.report:
        from benchmarks.machine import machine_info, save_table

        records = [run_record(Path(d)) for d in args.report]
        budget = {k: records[0][k] for k in ("domain", "batch_size", "max_new_tokens")}
        budget["screen"] = max(r["screen"] for r in records)
        payload = report(records, {**machine_info(), "note": "reported from run folders"}, budget, 0.0)
        save_table(args.results, "screen", payload)
        return payload
    out = Path(args.out or tempfile.mkdtemp(prefix="evoforge-screen-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    import torch

    from benchmarks.machine import machine_at_start, save_table
    from evoforge.core.config import RunConfig
    from models.loading import load_backend

    torch.set_num_threads(args.threads)
    machine = machine_at_start()
    load_backend("smollm2", "auto")  # once: every run's own load_backend call returns this copy
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    budget = dict(generations=args.generations, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    started, records = time.perf_counter(), []
    for seed in args.seeds:
        for screen in (0, args.screen):
            config = RunConfig(domain=args.domain, seed=seed, screen=screen, out=str(out), heldout_judge=False,
                               run_name=f"{args.domain}-screen{screen}-s{seed}-{stamp}", experiment="evoforge-screen",
                               **budget)
            records.append(run_one(config))
            r = records[-1]
            print(f"seed {seed} screen {screen}: QD {r['qd_score']:.2f}, coverage {r['coverage']:.0%}, "
                  f"{r['judge_calls']} judge calls, {r['wall_s']:.0f} s", flush=True)
    payload = report(records, machine, {**budget, "screen": args.screen, "domain": args.domain},
                     time.perf_counter() - started)
    save_table(args.results, "screen", payload)
    return payload


if __name__ == "__main__":
    main()
