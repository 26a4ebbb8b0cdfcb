"""Evolving arrangements against fixed experts at equal budget (issue 18).

    .venv/bin/python benchmarks/arrangement_bench.py [--quick] [--domains opinions stories] [--seeds 0 1 2]

For each domain x seed, two real `evolution_run` flows in one process (the models load once): `fixed` (the
population stays as made: today) and `evolve` (`arrangements.evolve`: every `--cull-every` generations the
`--cull` experts with the lowest value over the last `--window` generations are replaced by children of the best
two). Both write the same candidates per generation (generations x batch size), each judged once by the same panel,
from the same founders (the same seed): the two runs are identical until the first cull. Per arm: QD score,
coverage, mean elite quality, candidate quality, new tokens, judge calls, wall time, the held-out judge's agreement
with the final elites' cells (does evolution game the run's judges?), and the final population's spread of
sampling settings; the ratio evolve / fixed of QD and mean elite quality per seed (paired: same founders) and over
seeds (bootstrap 95% interval).

Writes benchmarks/results/<date>-<host>-arrangements.json (after every run, so a stopped benchmark keeps what it
measured) and prints the Markdown table.
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

from benchmarks.science import (cell, heldout_panel, interval, ratio_interval, run_one,  # noqa: E402
                                shared_models)

ARMS = ["fixed", "evolve"]
BASELINE = "fixed"
METRICS = ["qd_score", "coverage", "mean_quality", "candidate_mean_quality", "tokens", "judge_calls", "wall_s",
           "heldout_agreement", "std_temperature", "system_prompts", "culled"]


def population_spread(run_dir: Path) -> dict:
    """The final population's spread (standard deviation of temperature, distinct system prompts) and how many
    experts were culled over the run, from experts.parquet."""
    rows = pd.read_parquet(run_dir / "experts.parquet")
    last = rows[rows["generation"] == rows["generation"].max()]
    if "culled" in last:
        last = last[last["culled"].isna()]
    return {"std_temperature": float(last["temperature"].std(ddof=0)),
            "system_prompts": int(last["system_prompt"].nunique()),
            "culled": int(rows["culled"].notna().sum()) if "culled" in rows else 0}


def run_arm(config, heldout_panel, backends, embedder, arm: str) -> dict:
    """One real flow run (benchmarks.science.run_one) and what this benchmark adds: tokens, judge calls, spread."""
    record = run_one(config, heldout_panel, backends, embedder)
    run_dir = Path(record["run_dir"])
    metrics = [pd.read_json(p, typ="series") for p in sorted((run_dir / "metrics").glob("gen_*.json"))]
    record.update(arm=arm, tokens=int(sum(m["tokens_generated"] for m in metrics)),
                  judge_calls=int(sum(m["judge_calls"] for m in metrics)), **population_spread(run_dir))
    return record


def summarise(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per domain and arm: mean and 95% interval over seeds of every metric, the ratio of means to `fixed` with a
    bootstrap interval, and the per-seed (paired) QD ratios."""
    rng = np.random.default_rng(seed)
    rows = []
    for (domain, arm), group in runs.groupby(["domain", "arm"], sort=False):
        row = {"domain": domain, "arm": arm, "seeds": len(group)}
        for metric in METRICS:
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = interval(group[metric].dropna())
        base = runs[(runs["domain"] == domain) & (runs["arm"] == BASELINE)].set_index("seed")
        for metric in ("qd_score", "mean_quality"):
            row[f"{metric}_ratio"], row[f"{metric}_ratio_low"], row[f"{metric}_ratio_high"] = ratio_interval(
                group[metric], base[metric], rng)
        paired = group.set_index("seed")["qd_score"] / base["qd_score"].reindex(group["seed"]).to_numpy()
        row["qd_ratio_per_seed"] = {int(s): round(float(r), 3) for s, r in paired.items() if not pd.isna(r)}
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame) -> str:
    lines = ["| domain | arm | seeds | QD score (95% CI) | x fixed (95% CI) | x fixed per seed | coverage "
             "| mean elite quality | x fixed | candidate quality | new tokens | judge calls | wall s per run "
             "| held-out: same or next cell | final sd of temperature | system prompts | culled |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary.to_dict("records"):
        per_seed = ", ".join(f"{r:.2f}" for r in row["qd_ratio_per_seed"].values())
        lines.append(
            f"| {row['domain']} | {row['arm']} | {row['seeds']} | {cell(row, 'qd_score')} "
            f"| {row['qd_score_ratio']:.2f}x ({row['qd_score_ratio_low']:.2f}-{row['qd_score_ratio_high']:.2f}) "
            f"| {per_seed} | {row['coverage']:.1%} | {cell(row, 'mean_quality', '{:.3f}')} "
            f"| {row['mean_quality_ratio']:.3f}x | {row['candidate_mean_quality']:.3f} | {row['tokens']:.0f} "
            f"| {row['judge_calls']:.0f} | {row['wall_s']:.0f} | {row['heldout_agreement']:.0%} "
            f"| {row['std_temperature']:.3f} | {row['system_prompts']:.1f} | {row['culled']:.1f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny variant that checks the benchmark works (minutes)")
    p.add_argument("--domains", nargs="+", default=None, help="default: opinions stories (quick: opinions)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (quick: 0)")
    p.add_argument("--generations", type=int, default=None, help="default 8 (quick 3)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 (quick 4)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="largest max-new-tokens an expert may draw")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--cull-every", type=int, default=2)
    p.add_argument("--cull", type=int, default=1)
    p.add_argument("--window", type=int, default=2)
    p.add_argument("--mutation-scale", type=float, default=0.3)
    p.add_argument("--crossover-rate", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    p.add_argument("--tag", default="", help="suffix of the results file's name")
    p.add_argument("--resume", default=None, metavar="JSON",
                   help="keep the runs of an earlier results file of the same budget and settings, and run only the "
                   "(domain, arm, seed) runs it lacks")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    args.domains = args.domains or (["opinions"] if args.quick else ["opinions", "stories"])
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    args.generations = args.generations or (3 if args.quick else 8)
    args.batch_size = args.batch_size or (4 if args.quick else 16)
    if args.quick:
        args.max_new_tokens, args.cull_every = 16, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="evoforge-arrangements-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain

    started = time.perf_counter()
    machine, backends, embedder = shared_models(args.threads)
    budget = dict(generations=args.generations, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                  experts=args.experts)
    evolve = dict(evolve=True, cull_every=args.cull_every, cull=args.cull, window=args.window,
                  mutation_scale=args.mutation_scale, crossover_rate=args.crossover_rate)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    quick = "-quick" if args.quick else ""
    path = results / f"{datetime.now(timezone.utc):%Y-%m-%d}-{machine['host']}-arrangements{quick}{args.tag}.json"
    heldout_panels, records = {}, []
    if args.resume:
        earlier = json.loads(Path(args.resume).read_text())
        if earlier["budget"] != {**budget, "candidates": args.generations * args.batch_size} or \
                earlier["arrangements"] != evolve:
            raise SystemExit(f"--resume: {args.resume} ran another budget or other arrangements settings "
                             f"({earlier['budget']}, {earlier['arrangements']}); resume only the same benchmark")
        records = earlier["runs"]
    done = {(r["domain"], r["arm"], r["seed"]) for r in records}
    earlier_s = earlier["seconds"] if args.resume else 0.0

    def write(records: list[dict], complete: bool) -> dict:
        """The results file so far (after every run: a stopped benchmark keeps what it measured)."""
        summary = summarise(pd.DataFrame(records))
        payload = {"machine": machine, "budget": {**budget, "candidates": args.generations * args.batch_size},
                   "arrangements": evolve, "domains": args.domains, "seeds": args.seeds,
                   "seconds": earlier_s + time.perf_counter() - started, "complete": complete,
                   "summary": summary.to_dict("records"), "runs": records, "table": markdown_table(summary)}
        path.write_text(json.dumps(payload, indent=2, default=float))
        return payload

    for seed in args.seeds:  # seed-major: a stopped benchmark has both arms of every finished seed
        for domain_name in args.domains:
            domain = load_domain(domain_name)
            for arm in ARMS:
                if (domain.name, arm, seed) in done:
                    continue
                config = RunConfig(domain=domain_name, seed=seed, out=str(out), heldout_judge=False,
                                   run_name=f"{domain.name}-{arm}-s{seed}-{stamp}", experiment="evoforge-arrangements",
                                   arrangements=evolve if arm == "evolve" else {}, **budget)
                record = run_arm(config, heldout_panel(heldout_panels, config, domain, backends), backends, embedder,
                                 arm)
                records.append(record)
                print(f"{domain.name:9s} {arm:7s} seed {seed}: QD {record['qd_score']:.2f}, coverage "
                      f"{record['coverage']:.0%}, mean elite quality {record['mean_quality']:.3f}, "
                      f"{record['tokens']} tokens, {record['judge_calls']} judge calls, {record['wall_s']:.0f} s",
                      flush=True)
                write(records, complete=False)
    payload = write(records, complete=True)
    print(payload["table"])
    print(f"\nresults: {path}\nruns: {out}")
    return payload


if __name__ == "__main__":
    main()
