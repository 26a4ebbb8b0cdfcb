"""Prioritized against uniform replay, on the tuned models' QD (issue 16).

    .venv/bin/python benchmarks/replay_bench.py --run runs/<a finished run> [--seeds 0 1 2] [--generations 4 --batch-size 8]

The same finished run's elites train two LoRA adapters on the base model with the trainer's defaults: one on the
elites drawn uniformly (today's fine-tune data), one by prioritized replay (`finetune.replay: prioritized`, priority
= the elite's quality, alpha 0.6, beta 0.4; the draws happen after the held-out split, so both are scored on the
same held-out examples). Then, once per seed, the evaluation flow's function fills a fresh archive with each of
them and with the base model (same budget, seed and fitted panel; niche prompting), and the table gives each
model's scores and prioritized / uniform per seed.

Writes benchmarks/results/<date>-<host>-replay.json and prints the Markdown table (for the README).
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
ARMS = {"candidate": "prioritized", "champion": "uniform", "base": "base"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run's folder (its candidates.parquet and config.json)")
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
    from evoforge.core.config import EvaluateConfig, FinetuneConfig, RunConfig
    from evoforge.training.finetuning import evaluate_models, run_training_frame, train_and_register

    work = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    started = time.monotonic()
    checkpoints, held_out, tuning = {}, {}, {}
    for replay in ("uniform", "prioritized"):
        settings = FinetuneConfig(replay=replay)
        domain, frame = run_training_frame(Path(args.run), settings)
        t0 = time.monotonic()
        outcome = train_and_register(frame, "smollm2", settings, work / f"ft-{replay}", tracker=None,
                                     register_as=None)
        checkpoints[replay], held_out[replay] = outcome["checkpoint"], outcome["held_out"]
        tuning[replay] = {"examples": len(frame), "seconds": time.monotonic() - t0,
                          "held_out_loss_before": outcome["held_out_loss_before"],
                          "held_out_loss": outcome["held_out_loss"]}
        print(f"{replay}: {len(frame)} examples, held-out loss {outcome['held_out_loss_before']:.3f} -> "
              f"{outcome['held_out_loss']:.3f} ({tuning[replay]['seconds']:.0f} s)", flush=True)

    rows, evaluation_s = [], {}
    for seed in args.seeds:
        config = RunConfig(domain=domain.name, seed=seed, max_new_tokens=args.max_new_tokens,
                           evaluate=EvaluateConfig(generations=args.generations, batch_size=args.batch_size))
        t0 = time.monotonic()
        result = evaluate_models(config, checkpoints["prioritized"], checkpoints["uniform"], work / f"eval-s{seed}",
                                 None, rivals=[("base", "smollm2")])
        evaluation_s[seed] = time.monotonic() - t0
        for arm in result["arms"]:
            rows.append({"seed": seed, "model": ARMS[arm["label"]],
                         **{k: arm["scores"].get(k, np.nan) for k in SCORES}})
        print(result["table"], flush=True)

    frame = pd.DataFrame(rows)
    qd = frame.pivot(index="seed", columns="model", values="qd_score")
    ratios = (qd["prioritized"] / qd["uniform"]).to_list()
    summary = frame.groupby("model", sort=False)[SCORES].agg(["mean", "std"])
    lines = ["| model | QD score | coverage | mean elite quality | mean candidate quality | candidate diversity |",
             "|---|---|---|---|---|---|"]
    for label in ("prioritized", "uniform", "base"):
        s = summary.loc[label]
        cell = lambda k: f"{s[(k, 'mean')]:.3f}" + (f" ± {s[(k, 'std')]:.3f}" if len(args.seeds) > 1 else "")
        lines.append(f"| {label} | {cell('qd_score')} | {cell('coverage')} | {cell('mean_quality')} | "
                     f"{cell('candidate_mean_quality')} | {cell('candidate_diversity')} |")
    lines.append(f"\nQD prioritized / uniform per seed: {', '.join(f'{r:.2f}x' for r in ratios)} "
                 f"(mean {np.mean(ratios):.2f}x)")
    payload = {
        "machine": machine_at_start(),
        "settings": {**vars(args), "finetune": FinetuneConfig(replay="prioritized").model_dump()},
        "tuning": tuning, "evaluation_s": evaluation_s, "per_seed": rows, "qd_ratio_per_seed": ratios,
        "wall_s": time.monotonic() - started, "table": "\n".join(lines),
    }
    save_table(args.out, "replay", payload)


if __name__ == "__main__":
    main()
