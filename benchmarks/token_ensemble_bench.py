"""`ask`'s token-level ensemble (`ensemble: tokens`) against consensus over the experts' own answers, at equal tokens.

    .venv/bin/python benchmarks/token_ensemble_bench.py [--questions 24] [--seeds 2] [--experts 4]

Per seed: a fresh population of the tournament's random experts (as benchmarks/ask_bench.py) and an evenly spaced
subset of `data/ask/questions.yaml`. `consensus`: every expert samples its own answer (`expert_answers`), and the
consensus pick (words, threshold 0.2, most central) is kept. `tokens`: the same experts write one answer per
question together (`ensembled_answers`: each token drawn from their averaged next-token distributions, all
questions in one batched call). Equal tokens: both decode one row per expert and question, so the token positions
computed are (experts x answer length) either way; reported as row-tokens per question, with accuracy (whole-word
ground truth) and wall seconds, both in the same run.

Writes benchmarks/results/<date>-<host>-token-ensemble<tag>.json and prints the README's table.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.ask_bench import bench_setup, interval  # noqa: E402
from benchmarks.ask_strategy_bench import bench_arguments, graded, kept_correct, population, question_subset  # noqa: E402
from evoforge.steps.ask_search import ensembled_answers  # noqa: E402
from evoforge.steps.tournament import expert_answers, load_spec  # noqa: E402


def main() -> int:
    args = bench_arguments(argparse.ArgumentParser(description=__doc__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
    from benchmarks.machine import save_table
    from models.loading import load_backend

    questions, step = question_subset(args.questions)
    config, machine = bench_setup(args.experts, args.max_new_tokens)
    spec = load_spec()
    backends = {"smollm2": load_backend("smollm2", config.precision)}
    records = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        experts = population(config, spec, seed)
        jobs = [(e.expert_id, task) for task in questions["task"] for e in experts]
        for method in ("consensus", "tokens"):
            started = time.perf_counter()
            if method == "tokens":
                answers = ensembled_answers(backends, experts, jobs, 1000 * seed, max_new_tokens=args.max_new_tokens)
            else:
                answers = expert_answers(backends, experts, jobs, config.continue_tokens, seed=1000 * seed,
                                         batch_size=64)
            wall = time.perf_counter() - started
            answers = graded(answers, questions, len(experts))
            kept = kept_correct(answers)  # for tokens every row of a question holds the one answer
            records.append({"seed": seed, "method": method, "accuracy": float(kept.mean()),
                            "single_accuracy": float(answers["correct"].mean()),
                            "row_tokens_per_question": float(answers["new_tokens"].sum() / len(questions)),
                            "answer_words": float(answers["text"].str.split().str.len().mean()), "wall_s": wall})
            print(records[-1], flush=True)
    frame = pd.DataFrame(records)
    rows = []
    for method, group in frame.groupby("method", sort=False):
        rows.append({"method": method, "accuracy": interval(group["accuracy"]),
                     "single_accuracy": float(group["single_accuracy"].mean()),
                     **{k: float(group[k].mean()) for k in ("row_tokens_per_question", "answer_words", "wall_s")}})
    base = rows[0]
    lines = [f"{len(questions)} questions (every {step}th), {args.experts} experts, {args.seeds} seeds, up to "
             f"{args.max_new_tokens} tokens; machine: {machine['cpu']} ({machine['cores']} cores, {args.threads} torch "
             f"thread, {machine['precision']})", "",
             "| ensemble | kept accuracy (95% interval, seeds) | per seed | row-tokens / question (x consensus) | "
             "words / answer | wall s (x consensus) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['accuracy']['mean']:.3f} ({r['accuracy']['low']:.3f}-"
                     f"{r['accuracy']['high']:.3f}) | {', '.join(f'{v:.3f}' for v in r['accuracy']['per_seed'])} | "
                     f"{r['row_tokens_per_question']:.0f} ({r['row_tokens_per_question'] / base['row_tokens_per_question']:.2f}x) | "
                     f"{r['answer_words']:.1f} | {r['wall_s']:.0f} ({r['wall_s'] / base['wall_s']:.2f}x) |")
    payload = {"machine": machine, "settings": {**vars(args), "step": step}, "methods": rows, "per_seed": records,
               "table": "\n".join(lines)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_table(args.out, f"token-ensemble{args.tag}", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
