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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

import evoforge  # noqa: E402,F401  (telemetry off before MLflow or Prefect load)

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
    from benchmarks.tuned_models import evaluate_on_seeds, scores_table
    from evoforge.core.config import FinetuneConfig
    from evoforge.training.finetuning import run_training_frame, train_and_register

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

    rows, evaluation_s = evaluate_on_seeds(domain.name, args, checkpoints["prioritized"], checkpoints["uniform"],
                                           ARMS, work, rivals=[("base", "smollm2")])
    lines, ratios = scores_table(rows, ["prioritized", "uniform", "base"])
    payload = {
        "machine": machine_at_start(),
        "settings": {**vars(args), "finetune": FinetuneConfig(replay="prioritized").model_dump()},
        "tuning": tuning, "evaluation_s": evaluation_s, "per_seed": rows, "qd_ratio_per_seed": ratios,
        "wall_s": time.monotonic() - started, "table": "\n".join(lines),
    }
    save_table(args.out, "replay", payload)


if __name__ == "__main__":
    main()
