"""Merged models against their parents and the champion, on the evaluation flow's scores.

    .venv/bin/python benchmarks/merge_bench.py [--seeds 0 1] [--methods linear ties] [--generations 2 --batch-size 8]

Two parents are tuned (LoRA, the trainer's defaults but a higher learning rate, so that a few steps show) on two
niches of the opinions domain: the domain's labelled references, positive ones prompted for the "very positive"
niche and negative ones for "very negative" (the references are also what the judges are calibrated on; they are
the only labelled texts shipped). Each merge method makes one merged model (equal weights). Then every model --
each merged model, each parent and the champion (the base model: no champion is registered here) -- fills a fresh
archive through `evaluate_models` (the evaluation flow's function: same budget, seed, judges; niche prompting),
once per seed. Also: each model's held-out loss on each niche's held-out examples (float32), which says whether a
merge kept both niches, and each merge's residual (what re-factoring the merged delta into an adapter lost).

Writes benchmarks/results/<date>-<host>-merge.json and prints the Markdown table (for the README).
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
POLES = {"positive": 1, "negative": 0}  # reference label of each parent's niche


def niche_data(domain) -> dict[str, pd.DataFrame]:
    """Per pole: the references of that sentiment as (the niche's prompt, the text) pairs."""
    from evoforge.core.niches import niche_prompt

    refs = domain.load_references()
    last = domain.axes[0].num_bins - 1  # sentiment's first label is positive: the last bin is "very positive"
    return {
        pole: pd.DataFrame({"completion": refs.loc[refs["sentiment"] == label, "text"].tolist()}).assign(
            prompt=niche_prompt(domain, [last if label == 1 else 0]))
        for pole, label in POLES.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["linear", "ties"])
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.machine import machine_at_start, save_table
    from evoforge.core.config import EvaluateConfig, FinetuneConfig, MergeConfig, RunConfig
    from evoforge.core.domain import load_domain
    from evoforge.training.finetuning import evaluate_models, train_and_register
    from evoforge.training.merging import merge_parents
    from models.finetune import mean_loss
    from models.transformers_backend import TransformersBackend

    work = Path(tempfile.mkdtemp(prefix="merge-bench-"))
    domain = load_domain("opinions")
    started = time.monotonic()
    settings = FinetuneConfig(epochs=args.epochs, learning_rate=args.learning_rate)
    parents, held_out, tune_s = {}, {}, {}
    for pole, frame in niche_data(domain).items():
        t0 = time.monotonic()
        outcome = train_and_register(frame, "smollm2", settings, work / f"ft-{pole}", tracker=None, register_as=None)
        tune_s[pole] = time.monotonic() - t0
        parents[pole], held_out[pole] = outcome["checkpoint"], outcome["held_out"]
        print(f"parent {pole}: held-out loss {outcome['held_out_loss_before']:.3f} -> {outcome['held_out_loss']:.3f} "
              f"({tune_s[pole]:.0f} s)", flush=True)
    merged, residuals, merge_s = {}, {}, {}
    for method in args.methods:
        t0 = time.monotonic()
        made = merge_parents(list(parents.values()), MergeConfig(method=method), work / f"merged-{method}")
        merge_s[method] = time.monotonic() - t0
        merged[f"merged_{method}"], residuals[method] = made["checkpoint"], made["residual"]
        print(f"merged {method}: residual {made['residual']:.4f} ({merge_s[method]:.1f} s)", flush=True)

    models = {**merged, **{f"parent_{p}": c for p, c in parents.items()}, "champion": "smollm2"}
    losses = {}
    for label, model in models.items():  # float32: the losses of different models compared to the third decimal
        backend = TransformersBackend(model)
        losses[label] = {f"loss_{pole}": mean_loss(backend.model, backend.tokenizer, held_out[pole]) for pole in POLES}
        del backend

    rows, arms_s = [], {}
    first, *rest = list(merged)
    rivals = [(label, models[label]) for label in rest + [f"parent_{p}" for p in POLES]]
    for seed in args.seeds:
        config = RunConfig(domain="opinions", seed=seed, max_new_tokens=args.max_new_tokens,
                           evaluate=EvaluateConfig(generations=args.generations, batch_size=args.batch_size))
        t0 = time.monotonic()
        result = evaluate_models(config, models[first], "smollm2", work / f"eval-s{seed}", None, rivals=rivals)
        arms_s[seed] = time.monotonic() - t0
        for arm in result["arms"]:
            label = first if arm["label"] == "candidate" else arm["label"]
            rows.append({"seed": seed, "model": label, **{k: arm["scores"].get(k, np.nan) for k in SCORES}})
        print(result["table"], flush=True)

    frame = pd.DataFrame(rows)
    summary = frame.groupby("model", sort=False)[SCORES].agg(["mean", "std"])
    order = list(models)
    lines = ["| model | QD score | coverage | mean elite quality | mean candidate quality | candidate diversity | "
             "held-out loss, positive niche | held-out loss, negative niche |", "|---|" + "---|" * 7]
    for label in order:
        s = summary.loc[label]
        cell = lambda k: f"{s[(k, 'mean')]:.3f}" + (f" ± {s[(k, 'std')]:.3f}" if len(args.seeds) > 1 else "")
        lines.append(f"| {label} | {cell('qd_score')} | {cell('coverage')} | {cell('mean_quality')} | "
                     f"{cell('candidate_mean_quality')} | {cell('candidate_diversity')} | "
                     f"{losses[label]['loss_positive']:.3f} | {losses[label]['loss_negative']:.3f} |")
    payload = {
        "machine": machine_at_start(),
        "settings": {**vars(args), "finetune": settings.model_dump(), "weights": "equal"},
        "parents_tune_s": tune_s, "merge_s": merge_s, "residual": residuals, "evaluation_s": arms_s,
        "held_out_loss": losses, "per_seed": rows, "wall_s": time.monotonic() - started,
        "table": "\n".join(lines),
    }
    save_table(args.out, "merge", payload)


if __name__ == "__main__":
    main()
