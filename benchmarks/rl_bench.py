"""RL from judge reward against the base model, on the evaluation flow's scores (issue 16).

    .venv/bin/python benchmarks/rl_bench.py [--steps 24] [--seeds 0 1 2] [--generations 4 --batch-size 8]

One LoRA adapter is trained by `evoforge.training.rl.train_rl` (RLConfig's defaults unless given: 24 updates of
4 niche prompts x 4 samples, reward = the default panel's quality - the measures' distance from the asked niche).
Then, once per seed, the evaluation flow's function fills a fresh archive with the tuned model and with the base
model (same budget, seed and fitted panel; niche prompting, which is what the policy was trained on), and the
table gives each model's scores and tuned / base per seed. The reward per step shows whether training moved it.

Writes benchmarks/results/<date>-<host>-rl.json and prints the Markdown table (for the README).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

import evoforge  # noqa: E402,F401  (telemetry off before MLflow or Prefect load)

SCORES = ["qd_score", "coverage", "mean_quality", "max_quality", "candidate_mean_quality", "candidate_diversity"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="opinions")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.machine import machine_at_start, save_table
    from evoforge.core.config import EvaluateConfig, RLConfig, RunConfig
    from evoforge.core.domain import load_domain
    from evoforge.training.finetuning import evaluate_models
    from evoforge.training.rl import train_rl

    work = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    started = time.monotonic()
    settings = RLConfig(**({"steps": args.steps} if args.steps else {}))
    domain = load_domain(args.domain)
    t0 = time.monotonic()
    outcome = train_rl(domain, "smollm2", settings, RunConfig(domain=args.domain), work / "rl", None, None)
    train_s = time.monotonic() - t0
    rewards = [h["reward"] for h in outcome["history"]]
    print(f"rl: reward {rewards[0]:.3f} -> {rewards[-1]:.3f} over {len(rewards)} steps ({train_s:.0f} s)", flush=True)

    rows, evaluation_s = [], {}
    for seed in args.seeds:
        config = RunConfig(domain=args.domain, seed=seed, max_new_tokens=args.max_new_tokens,
                           evaluate=EvaluateConfig(generations=args.generations, batch_size=args.batch_size))
        t0 = time.monotonic()
        result = evaluate_models(config, outcome["checkpoint"], "smollm2", work / f"eval-s{seed}", None)
        evaluation_s[seed] = time.monotonic() - t0
        for arm in result["arms"]:
            rows.append({"seed": seed, "model": "rl" if arm["label"] == "candidate" else "base",
                         **{k: arm["scores"].get(k, np.nan) for k in SCORES}})
        print(result["table"], flush=True)

    frame = pd.DataFrame(rows)
    qd = frame.pivot(index="seed", columns="model", values="qd_score")
    ratios = (qd["rl"] / qd["base"]).to_list()
    summary = frame.groupby("model", sort=False)[SCORES].agg(["mean", "std"])
    lines = ["| model | QD score | coverage | mean elite quality | mean candidate quality | candidate diversity |",
             "|---|---|---|---|---|---|"]
    for label in ("rl", "base"):
        s = summary.loc[label]
        cell = lambda k: f"{s[(k, 'mean')]:.3f}" + (f" ± {s[(k, 'std')]:.3f}" if len(args.seeds) > 1 else "")
        lines.append(f"| {label} | {cell('qd_score')} | {cell('coverage')} | {cell('mean_quality')} | "
                     f"{cell('candidate_mean_quality')} | {cell('candidate_diversity')} |")
    first, last = np.mean(rewards[:4]), np.mean(rewards[-4:])
    lines.append(f"\nQD rl / base per seed: {', '.join(f'{r:.2f}x' for r in ratios)} (mean {np.mean(ratios):.2f}x); "
                 f"training reward, mean of the first 4 steps {first:.3f} -> last 4 {last:.3f}")
    payload = {
        "machine": machine_at_start(),
        "settings": {**vars(args), "rl": settings.model_dump()},
        "train_s": train_s, "history": outcome["history"], "evaluation_s": evaluation_s, "per_seed": rows,
        "qd_ratio_per_seed": ratios, "wall_s": time.monotonic() - started, "table": "\n".join(lines),
    }
    save_table(args.out, "rl", payload)


if __name__ == "__main__":
    main()
