"""Layers (Mixture-of-Agents) and generator ensembles of `ask` against one layer, at equal generated tokens.

    make bench-moa                 # or: .venv/bin/python benchmarks/moa_bench.py [--quick] [--seeds 3] [--threads 1]

The questions of `benchmarks/ask_bench.py` (data/ask/questions.yaml, correct = an accepted answer as whole words;
every third question is the labelled split, accuracy is over the others). Per seed a fresh population of experts
(the tournament's own random experts) answers every question, batched across questions with the tournament's own
`layered_answers`:

- `--layers` layers once (layer 1 is exactly one layer's answers; layer k read layer k-1's answers), and
- one layer `--layers` - 1 more times with other generation seeds (ask's iterations: more answers to agree on).

Arms compared at (close to) equal generated tokens per question: "1 layer x R answers each" keeps one answer out of
R x experts answers; "L layers" keeps one out of the last layer's answers, having paid for L layers. Tokens are
counted (every layer's and every repeat's new tokens), not calls. Per arm the selections that need no judges run on
the same answers: consensus (words, the default threshold 0.2, most central), `vote` (most common normalised short
answer) and `weighted` (consensus clusters weighted by expert values learned on the labelled split by agreement,
`expert_weights`); plus the mean single answer and the ceiling (some answer correct).

Writes benchmarks/results/<date>-<host>-moa[-quick].json and prints the README's markdown table.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.ask_bench import bench_setup, interval, learned_values, load_questions  # noqa: E402
from evoforge.core.config import TournamentConfig  # noqa: E402
from evoforge.core.experts import random_experts  # noqa: E402
from evoforge.judges import selection  # noqa: E402
from evoforge.steps.tournament import layered_answers, load_spec  # noqa: E402

METHODS = ("consensus", "vote", "weighted")
THRESHOLD = 0.2  # ask's default consensus threshold (words)


def collect(seed: int, questions: pd.DataFrame, config: TournamentConfig, backend, layers: int,
            timings: dict) -> pd.DataFrame:
    """Every expert's answers to every question: `layers` layers (repeat 0) and `layers` - 1 one-layer repeats.
    Rows: tid, expert_id, repeat, layer, text, new_tokens."""
    spec = load_spec()
    rng = np.random.default_rng([config.seed + seed, 2**31])
    experts = random_experts(config.experts, config.generator_models, config.sampling_ranges(), spec.personas,
                             spec.personas, rng, shots=0)
    jobs = [(e.expert_id, task) for task in questions["task"] for e in experts]
    tids = np.repeat(questions["tid"].to_numpy(), len(experts))
    parts = []
    for repeat, depth in [(0, layers)] + [(r, 1) for r in range(1, layers)]:
        started = time.perf_counter()
        # The seeds of ask_bench's repeats: repeat 0's layer 1 and the repeats are its one-layer answers.
        done = layered_answers({"smollm2": backend}, experts, jobs, depth, config.layer_context_chars,
                               config.continue_tokens, seed=1000 * seed + repeat, batch_size=64)
        timings[f"repeat{repeat}_s"] = time.perf_counter() - started
        parts.append(done.assign(tid=tids[done["job"].to_numpy()], repeat=repeat))
        print(f"  seed {seed} repeat {repeat} ({depth} layers): {timings[f'repeat{repeat}_s']:.0f} s", flush=True)
    return pd.concat(parts, ignore_index=True).assign(seed=seed)[
        ["seed", "tid", "expert_id", "repeat", "layer", "text", "new_tokens"]]


def arms(layers: int) -> list[tuple[str, dict, list]]:
    """(name, which answers are kept from, which answers were paid for) per arm: filters on (repeat, layer)."""
    out = []
    for r in range(1, layers + 1):
        paid = [(k, 1) for k in range(r)]
        out.append((f"1 layer x {r} answers each", paid, paid))
    for depth in range(2, layers + 1):
        out.append((f"{depth} layers", [(0, depth)], [(0, k) for k in range(1, depth + 1)]))
    return out


def pick(frame: pd.DataFrame, pairs: list) -> pd.DataFrame:
    keys = set(pairs)
    return frame[[(r, k) in keys for r, k in zip(frame["repeat"], frame["layer"])]]


def features(answers: pd.DataFrame, tasks: pd.Series) -> pd.DataFrame:
    """Consensus columns (words, ask's default threshold) and the vote, per (seed, task), among these answers."""
    parts = []
    for (_, tid), group in answers.groupby(["seed", "tid"], sort=False):
        texts, task = group["text"].tolist(), tasks[tid]
        feats = selection.consensus_features(selection.word_similarity(texts, task), THRESHOLD)
        feats["form"] = selection.vote_forms(texts, task)
        feats.index = group.index
        parts.append(feats)
    return answers.join(pd.concat(parts))


def evaluate(answers: pd.DataFrame, questions: pd.DataFrame, n_experts: int, config: TournamentConfig,
             layers: int) -> list[dict]:
    """Per arm: tokens per question, single-answer and ceiling accuracy, and each selection's accuracy."""
    tasks = questions.set_index("tid")["task"]
    answers = answers.join(questions.set_index("tid")[["labelled", "answers"]], on="tid")
    answers["correct"] = [selection.contains_answer(t, a) for t, a in zip(answers["text"], answers["answers"])]
    rows = []
    for name, kept_from, paid in arms(layers):
        tokens = pick(answers, paid).groupby(["seed", "tid"])["new_tokens"].sum()
        frame = features(pick(answers, kept_from), tasks)
        values = {s: learned_values(g, n_experts, config, "consensus") for s, g in frame.groupby("seed")}
        frame["weight"] = [selection.expert_weights(values[s])[e] for s, e in zip(frame["seed"], frame["expert_id"])]
        test = frame[~frame["labelled"]]
        row = {"arm": name, "answers_per_question": int(len(kept_from) * n_experts),
               "tokens_per_question": float(tokens[~questions.set_index("tid").loc[
                   tokens.index.get_level_values("tid"), "labelled"].to_numpy()].mean()),
               "single": interval(test.groupby("seed")["correct"].mean()),
               "ceiling": interval(test.groupby(["seed", "tid"])["correct"].max().groupby("seed").mean())}
        for method in METHODS:
            chosen = test.groupby(["seed", "tid"], sort=False).apply(
                lambda g: g.index[selection.select(method, g.reset_index(drop=True))])
            row[method] = interval(test.loc[chosen.to_numpy()].groupby("seed")["correct"].mean())
        rows.append(row)
        print(f"  {name:<28} tokens/q {row['tokens_per_question']:6.1f}  single {row['single']['mean']:.3f}  "
              + "  ".join(f"{m} {row[m]['mean']:.3f}" for m in METHODS), flush=True)
    return rows


def per_layer(answers: pd.DataFrame, questions: pd.DataFrame) -> list[dict]:
    """Does reading the previous layer help one answer? Accuracy of single answers, agreement and length per layer
    (repeat 0: the layered run)."""
    frame = answers[answers["repeat"] == 0].join(questions.set_index("tid")[["labelled", "answers", "task"]], on="tid")
    frame = frame[~frame["labelled"]]
    frame["correct"] = [selection.contains_answer(t, a) for t, a in zip(frame["text"], frame["answers"])]
    out = []
    for layer, group in frame.groupby("layer"):
        agree = [selection.consensus_features(selection.word_similarity(g["text"].tolist(), g["task"].iloc[0]),
                                              THRESHOLD)["agreement"].mean() for _, g in group.groupby(["seed", "tid"])]
        out.append({"layer": int(layer), "single": interval(group.groupby("seed")["correct"].mean()),
                    "agreement": float(np.mean(agree)), "new_tokens_per_answer": float(group["new_tokens"].mean()),
                    "chars_per_answer": float(group["text"].str.len().mean())})
    return out


def markdown(results: dict) -> str:
    s, m = results["settings"], results["machine"]
    lines = [f"{s['reported_questions']} reported questions, {s['experts']} experts, {s['seeds']} seeds, up to "
             f"{s['max_new_tokens']} new tokens (+{s['continue_tokens']} continuation), machine: {m['cpu']} "
             f"({m['cores']} cores, {m['torch_threads']} torch thread(s), {m['precision']})", "",
             "| arm | answers kept from | tokens / question | single answer | ceiling | consensus | vote | weighted |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["arms"]:
        cells = [f"{r[k]['mean']:.3f}" for k in ("single", "ceiling", *METHODS)]
        lines.append(f"| {r['arm']} | {r['answers_per_question']} | {r['tokens_per_question']:.0f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| layer | single answer | agreement | new tokens / answer | characters / answer |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['single']['mean']:.3f} | {r['agreement']:.3f} | {r['new_tokens_per_answer']:.1f} "
              f"| {r['chars_per_answer']:.0f} |" for r in results["per_layer"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few questions, experts and tokens")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=3, help="most layers compared (and one-layer repeats)")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 where others use the cores)")
    parser.add_argument("--cache", default=None, help="folder to keep each seed's answers in (reused when present)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    if args.layers < 2:
        parser.error(f"--layers must be 2 or more (layers compared against one), got {args.layers}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from benchmarks.machine import save_table
    from models.loading import load_backend

    prompt, questions, _ = load_questions()
    if args.quick:
        questions = questions.iloc[:6].copy()
        args.seeds, args.experts, args.max_new_tokens = 1, 3, 8
    questions["task"] = [prompt.replace("{question}", q) for q in questions["question"]]
    questions["tid"] = range(len(questions))
    config, machine = bench_setup(args.experts, args.max_new_tokens)
    started = time.perf_counter()
    backend = load_backend("smollm2", config.precision)
    frames, timings = [], {}
    for seed in range(args.seeds):
        cached = Path(args.cache) / f"seed{seed}-layers{args.layers}.parquet" if args.cache else None
        if cached and cached.exists():
            frames.append(pd.read_parquet(cached))
            timed = cached.with_suffix(".timings.json")  # the collection's wall times travel with its answers
            timings[seed] = json.loads(timed.read_text()) if timed.exists() else {}
            continue
        timings[seed] = {}
        frame = collect(seed, questions, config, backend, args.layers, timings[seed])
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(cached)
            cached.with_suffix(".timings.json").write_text(json.dumps(timings[seed]))
        frames.append(frame)
    answers = pd.concat(frames, ignore_index=True)
    results = {"machine": machine,
               "settings": {"seeds": args.seeds, "layers": args.layers, "experts": args.experts,
                            "max_new_tokens": args.max_new_tokens, "continue_tokens": config.continue_tokens,
                            "layer_context_chars": config.layer_context_chars, "consensus_threshold": THRESHOLD,
                            "questions": int(len(questions)), "reported_questions": int((~questions["labelled"]).sum())},
               "arms": evaluate(answers, questions, args.experts, config, args.layers),
               "per_layer": per_layer(answers, questions), "timings_s": timings,
               "seconds": time.perf_counter() - started}
    results["table"] = markdown(results)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_table(args.out, f"moa{'-quick' if args.quick else ''}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
