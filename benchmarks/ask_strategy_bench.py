"""`ask` with a search strategy (`strategy: beam | tot | mcts`) against `sample`, on the ask benchmark's questions.

    .venv/bin/python benchmarks/ask_strategy_bench.py [--questions 24] [--seeds 2] [--strategies sample beam tot mcts]

Per seed: a fresh population of the tournament's random experts (as benchmarks/ask_bench.py) answers an evenly
spaced subset of `data/ask/questions.yaml`, once per strategy, with `ask`'s own code: `expert_answers` with the
strategy's `answer_search` (every expert x question search in one lockstep, tot and mcts valued by the tournament's
judges' panel on each question's own judging questions). The kept answer per question is the consensus pick (words,
threshold 0.2, most central: `ask`'s default rule without the judges' tie-break). Reported per strategy: accuracy of
the kept answer and of a single answer, new tokens per question (every token the searches generated), backend
calls (batched: what the model was asked) and wall seconds; ratios against `sample` measured in the same run.

Writes benchmarks/results/<date>-<host>-ask-strategies<tag>.json and prints the README's table.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.ask_bench import bench_setup, interval, load_questions  # noqa: E402
from evoforge.core.config import TreeConfig  # noqa: E402
from evoforge.core.experts import random_experts  # noqa: E402
from evoforge.judges import selection  # noqa: E402
from evoforge.judges.panel import fit_panel  # noqa: E402
from evoforge.search.tree_writing import TokenCount  # noqa: E402
from evoforge.steps.ask_search import answer_search  # noqa: E402
from evoforge.steps.tournament import expert_answers, load_spec, task_questions  # noqa: E402

CONSENSUS = selection.Consensus("words", 0.2)


def kept_correct(answers: pd.DataFrame) -> pd.Series:
    """Per question: whether the consensus pick (most central of the largest cluster) is correct."""
    def pick(group):
        features = CONSENSUS.features(group["text"].tolist(), group["task"].iloc[0])
        return bool(group["correct"].iloc[selection.select("consensus", features)])
    return answers.groupby("tid", sort=True).apply(pick)


def bench_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The options this benchmark and the token ensemble's share, parsed; one torch thread by default."""
    parser.add_argument("--questions", type=int, default=24, help="evenly spaced questions of the question set")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    return args


def question_subset(count: int) -> tuple[pd.DataFrame, int]:
    """`count` evenly spaced questions (every `step`th) with their `task` prompt and `tid`, and the step."""
    prompt, questions, _ = load_questions()
    step = max(1, len(questions) // count)
    questions = questions.iloc[::step].head(count).reset_index(drop=True)
    questions["task"] = [prompt.replace("{question}", q) for q in questions["question"]]
    questions["tid"] = range(len(questions))
    return questions, step


def population(config, spec, seed: int) -> list:
    """A seed's fresh population of the tournament's random experts (as benchmarks/ask_bench.py draws it)."""
    rng = np.random.default_rng([config.seed + seed, 2**31])
    return random_experts(config.experts, config.generator_models, config.sampling_ranges(), spec.personas,
                          spec.personas, rng, shots=0)


def graded(answers: pd.DataFrame, questions: pd.DataFrame, experts: int) -> pd.DataFrame:
    """Answers in (question, expert) order with their question's `tid`, `task`, accepted `answers` and `correct`."""
    answers["tid"] = np.repeat(questions["tid"].to_numpy(), experts)
    answers = answers.join(questions[["task", "answers"]], on="tid")
    answers["correct"] = [selection.contains_answer(t, list(a)) for t, a in zip(answers["text"], answers["answers"])]
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["sample", "beam", "tot", "mcts"])
    args = bench_arguments(parser)
    from benchmarks.machine import save_table
    from models.loading import load_backend

    questions, step = question_subset(args.questions)
    config, machine = bench_setup(args.experts, args.max_new_tokens)
    tree = TreeConfig()  # ask's defaults
    spec = load_spec()
    real = load_backend("smollm2", config.precision)
    per_task = {t: task_questions(spec, t) for t in questions["task"]}
    panel = fit_panel({"smollm2": real}, config.judges, per_task[questions["task"].iloc[0]], config.combine)
    rows, per_seed = [], {s: [] for s in args.strategies}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        experts = population(config, spec, seed)
        jobs = [(e.expert_id, task) for task in questions["task"] for e in experts]
        for strategy in args.strategies:
            counted = TokenCount(real)
            search = answer_search(strategy, tree, panel, questions=per_task.get)
            started = time.perf_counter()
            answers = expert_answers({"smollm2": counted}, experts, jobs, config.continue_tokens, seed=1000 * seed,
                                     batch_size=64, search=search)
            wall = time.perf_counter() - started
            answers = graded(answers, questions, len(experts))
            record = {"seed": seed, "strategy": strategy, "kept_accuracy": float(kept_correct(answers).mean()),
                      "single_accuracy": float(answers["correct"].mean()),
                      "tokens_per_question": counted.tokens / len(questions), "backend_calls": counted.calls,
                      "search_calls": int(answers["model_calls"].sum()) if "model_calls" in answers else counted.calls,
                      "wall_s": wall, "mean_words": float(answers["text"].str.split().str.len().mean())}
            per_seed[strategy].append(record)
            print(record, flush=True)
    base = {k: np.mean([r[k] for r in per_seed["sample"]]) for k in ("tokens_per_question", "backend_calls", "wall_s")} \
        if "sample" in per_seed else None
    for strategy, records in per_seed.items():
        frame = pd.DataFrame(records)
        row = {"strategy": strategy, "kept": interval(frame["kept_accuracy"]),
               "single": interval(frame["single_accuracy"]),
               **{k: float(frame[k].mean()) for k in ("tokens_per_question", "backend_calls", "search_calls", "wall_s",
                                                       "mean_words")}}
        if base:
            row.update({f"{k}_ratio": row[k] / base[k] for k in base})
        rows.append(row)
    lines = [f"{len(questions)} questions (every {step}th), {args.experts} experts, {args.seeds} seeds, answers up to "
             f"{args.max_new_tokens} tokens, tree {tree.model_dump()}; kept = consensus (words 0.2, most central); "
             f"machine: {machine['cpu']} ({machine['cores']} cores, {args.threads} torch thread, "
             f"{machine['precision']})", "",
             "| strategy | kept accuracy (95% interval, seeds) | single answer | tokens / question (x sample) | "
             "backend calls (x sample) | search calls before merging | wall s (x sample) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['kept']['mean']:.3f} ({r['kept']['low']:.3f}-{r['kept']['high']:.3f}) | "
                     f"{r['single']['mean']:.3f} | {r['tokens_per_question']:.0f} ({r.get('tokens_per_question_ratio', 1):.1f}x) | "
                     f"{r['backend_calls']:.0f} ({r.get('backend_calls_ratio', 1):.1f}x) | {r['search_calls']:.0f} | "
                     f"{r['wall_s']:.0f} ({r.get('wall_s_ratio', 1):.1f}x) |")
    payload = {"machine": machine, "settings": {**vars(args), "tree": tree.model_dump(), "step": step},
               "strategies": rows, "per_seed": per_seed, "table": "\n".join(lines)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_table(args.out, f"ask-strategies{args.tag}", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
