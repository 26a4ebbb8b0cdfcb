"""What the benchmarks of tuned models share: each model fills a fresh archive per seed through the evaluation
flow's function (same budget, seed and fitted panel), and a table of their scores with a ratio per seed."""

import time

import numpy as np
import pandas as pd

SCORES = ["qd_score", "coverage", "mean_quality", "max_quality", "candidate_mean_quality", "candidate_diversity"]


def evaluate_on_seeds(domain: str, args, candidate: str, champion: str, names: dict[str, str], work,
                      rivals: list[tuple[str, str]] = ()) -> tuple[list[dict], dict]:
    """Per seed of `args.seeds`, `candidate` vs `champion` (and `rivals`) on `args`' budget (generations,
    batch_size, max_new_tokens). Returns one row of scores per seed and model (named by `names`, from the arms'
    labels) and the seconds each seed took."""
    from evoforge.core.config import EvaluateConfig, RunConfig
    from evoforge.training.finetuning import evaluate_models

    rows, seconds = [], {}
    for seed in args.seeds:
        config = RunConfig(domain=domain, seed=seed, max_new_tokens=args.max_new_tokens,
                           evaluate=EvaluateConfig(generations=args.generations, batch_size=args.batch_size))
        t0 = time.monotonic()
        result = evaluate_models(config, candidate, champion, work / f"eval-s{seed}", None, rivals=list(rivals))
        seconds[seed] = time.monotonic() - t0
        for arm in result["arms"]:
            rows.append({"seed": seed, "model": names[arm["label"]],
                         **{k: arm["scores"].get(k, np.nan) for k in SCORES}})
        print(result["table"], flush=True)
    return rows, seconds


def scores_table(rows: list[dict], order: list[str]) -> tuple[list[str], list[float]]:
    """The Markdown table of each model's scores (mean ± sd over seeds), and QD of the first model of `order` over
    the second's, per seed."""
    frame = pd.DataFrame(rows)
    qd = frame.pivot(index="seed", columns="model", values="qd_score")
    ratios = (qd[order[0]] / qd[order[1]]).to_list()
    summary = frame.groupby("model", sort=False)[SCORES].agg(["mean", "std"])
    several = frame["seed"].nunique() > 1
    lines = ["| model | QD score | coverage | mean elite quality | mean candidate quality | candidate diversity |",
             "|---|---|---|---|---|---|"]
    for label in order:
        s = summary.loc[label]
        cell = lambda k: f"{s[(k, 'mean')]:.3f}" + (f" ± {s[(k, 'std')]:.3f}" if several else "")
        lines.append(f"| {label} | {cell('qd_score')} | {cell('coverage')} | {cell('mean_quality')} | "
                     f"{cell('candidate_mean_quality')} | {cell('candidate_diversity')} |")
    lines.append(f"\nQD {order[0]} / {order[1]} per seed: {', '.join(f'{r:.2f}x' for r in ratios)} "
                 f"(mean {np.mean(ratios):.2f}x)")
    return lines, ratios
