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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

import evoforge  # noqa: E402,F401  (telemetry off before MLflow or Prefect load)



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
    from benchmarks.tuned_models import evaluate_on_seeds, scores_table
    from evoforge.core.config import RLConfig, RunConfig
    from evoforge.core.domain import load_domain
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

    rows, evaluation_s = evaluate_on_seeds(args.domain, args, outcome["checkpoint"], "smollm2",
                                           {"candidate": "rl", "champion": "base"}, work)
    lines, ratios = scores_table(rows, ["rl", "base"])
    first, last = np.mean(rewards[:4]), np.mean(rewards[-4:])
    lines.append(f"training reward, mean of the first 4 steps {first:.3f} -> last 4 {last:.3f}")
    payload = {
        "machine": machine_at_start(),
        "settings": {**vars(args), "rl": settings.model_dump()},
        "train_s": train_s, "history": outcome["history"], "evaluation_s": evaluation_s, "per_seed": rows,
        "qd_ratio_per_seed": ratios, "wall_s": time.monotonic() - started, "table": "\n".join(lines),
    }
    save_table(args.out, "rl", payload)


if __name__ == "__main__":
    main()
