"""The learned ranker (`selection: ranker`) against the judges', consensus and stacked picks, on held-out tasks.

    .venv/bin/python benchmarks/ranker_bench.py --cache DIR [--folds 5] [--split-seed 0]

Reads the answers `benchmarks/ask_bench.py --cache DIR` collected (per seed: every expert's answers to every
question, with the judges' `score` and the verifier's `verifier_raw` where it ran with `--features all`). The
questions are split by task into `--folds` parts (seeded); each part is held out once while the stacked model and
the ranker are fitted, with `fit_selector` exactly as `ask` fits them, on the other parts' answers of the same seed.
Every method keeps one answer per question; accuracy is the share of questions whose kept answer is correct,
over all held-out parts, per seed; the 95% interval is over seeds (t), and the ranker's paired difference with
consensus over questions (bootstrap). Where the cache holds the judges' scores, a last row fits the ranker on
the shipped labelled split (`data/ask/labelled.jsonl`, as `ask` does) and scores the questions outside it.

Writes benchmarks/results/<date>-<host>-ranker<tag>.json and prints the README's table.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.ask_bench import interval  # noqa: E402
from evoforge.judges import selection  # noqa: E402
from evoforge.judges.ranker import fit_ranker, grouped_folds  # noqa: E402

SEED_FEATURES = ("task_cosine", "peer_cosine", "log_words", "task_overlap", "peer_overlap")  # seed 002's own


def load_cache(folder: Path) -> pd.DataFrame:
    """Every cached seed's answers to the questions (open tasks left out), `correct` by the ground truth, and
    `group` = the question."""
    frames = []
    for path in sorted(folder.glob("seed*.parquet")):
        answers = pd.read_parquet(path)
        answers = answers[answers["qid"] >= 0].copy()
        answers["correct"] = [int(selection.contains_answer(t, list(a)))
                              for t, a in zip(answers["text"], answers["answers"])]
        frames.append(answers)
    if not frames:
        raise SystemExit(f"--cache: no seed*.parquet in {folder}; collect answers with benchmarks/ask_bench.py "
                         "--cache DIR --collect-only")
    frame = pd.concat(frames, ignore_index=True)
    frame["group"] = frame["tid"]
    return frame


def features_of(selector: selection.Selector, answers: pd.DataFrame, embedder) -> pd.DataFrame:
    """Each question's answers' selection features (as `ask` computes them), with `seed`, `tid`, `correct`."""
    parts = []
    for (seed, tid), group in answers.groupby(["seed", "tid"], sort=False):
        feats = selector.features(group["text"].tolist(), group["task"].iloc[0],
                                  group["score"] if "score" in group else None,
                                  group["verifier_raw"] if "verifier_raw" in group else None, embedder)
        parts.append(feats.assign(seed=seed, tid=tid, correct=group["correct"].to_numpy()))
    return pd.concat(parts, ignore_index=True)


def picks(frame: pd.DataFrame, pick) -> pd.Series:
    """Per (seed, tid): whether the answer `pick(features) -> row` keeps is correct."""
    return frame.groupby(["seed", "tid"], sort=False).apply(
        lambda g: int(g["correct"].iloc[pick(g.reset_index(drop=True))]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="a folder benchmarks/ask_bench.py --cache wrote")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--similarity", choices=["words", "embedding"], default="words")
    parser.add_argument("--threshold", type=float, default=0.2, help="consensus threshold (ask's default: 0.2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.machine import machine_at_start, save_table
    from evoforge.steps.screening import embedding_memo
    from models.embedder import load_embedder

    machine = machine_at_start()
    started = time.perf_counter()
    answers = load_cache(Path(args.cache))
    judged = "score" in answers and answers["score"].notna().all()
    verified = judged and "verifier_raw" in answers
    embedder = SimpleNamespace(embed=embedding_memo(load_embedder("minilm")))  # each text embedded once
    consensus = selection.Consensus(args.similarity, args.threshold)
    frame = features_of(selection.Selector("ranker", consensus), answers, embedder)
    features_s = time.perf_counter() - started

    def fitted(method: str, rows: np.ndarray) -> selection.Selector:
        train = answers[rows].assign(group=lambda f: f["seed"] * 10_000 + f["tid"])
        return selection.fit_selector(method, consensus, train, embedder)

    methods = ["judges", "consensus", "stacked", "ranker", "ranker (seed 002 features only)"]
    methods = [m for m in methods if (judged or m not in ("judges", "stacked")) and (verified or m != "stacked")]
    results = {m: [] for m in methods}
    coefficients = []
    fit_s = 0.0
    for seed in sorted(answers["seed"].unique()):
        mine = (answers["seed"] == seed).to_numpy()
        for held in grouped_folds(answers.loc[mine, "tid"].to_numpy(), args.folds, args.split_seed):
            test_rows = np.zeros(len(answers), bool)
            test_rows[np.flatnonzero(mine)[held]] = True
            train_rows = mine & ~test_rows
            test = frame[test_rows]
            tick = time.perf_counter()
            ranker = fitted("ranker", train_rows)
            coefficients.append(ranker.ranker.coefficients())
            seed_only = fit_ranker(frame[train_rows], frame.loc[train_rows, "correct"],
                                   frame.loc[train_rows, "tid"], SEED_FEATURES)
            stacked = fitted("stacked", train_rows) if "stacked" in methods else None
            fit_s += time.perf_counter() - tick
            for method in methods:
                if method == "stacked":
                    test_s = test.assign(verifier=stacked.calibrator(answers.loc[test_rows, "verifier_raw"].to_numpy()))
                    got = picks(test_s, stacked.pick)
                elif method == "ranker":
                    got = picks(test, ranker.pick)
                elif method.startswith("ranker ("):
                    got = picks(test, lambda g: selection.select_ranker(g, seed_only))
                else:
                    got = picks(test, lambda g, m=method: selection.select(m, g))
                results[method].append(got)
    kept = {m: pd.concat(v).sort_index() for m, v in results.items()}
    rows = [{"method": "single answer (mean over answers)",
             **interval(frame.groupby("seed")["correct"].mean())},
            {"method": "ceiling (some answer correct)",
             **interval(frame.groupby(["seed", "tid"])["correct"].max().groupby("seed").mean())}]
    rows += [{"method": m, **interval(k.groupby(level=0).mean())} for m, k in kept.items()]
    # The ranker minus consensus, paired over questions: a bootstrap of the per-question difference.
    diff = (kept["ranker"] - kept["consensus"]).to_numpy(dtype=float)
    boot = np.random.default_rng(0).choice(diff, (2000, len(diff))).mean(axis=1)
    paired = {"mean": float(diff.mean()), "low": float(np.quantile(boot, 0.025)),
              "high": float(np.quantile(boot, 0.975)), "questions": int(len(diff))}
    shipped = None
    if judged:  # as ask: fitted on the shipped labelled split, scored on the questions outside it
        ranker = selection.fit_selector("ranker", consensus, embedder=embedder)
        outside = frame[(frame["tid"] % 3 != 0).to_numpy()]  # ask_bench's labelled split: every third question
        shipped = {"method": "ranker fitted on data/ask/labelled.jsonl (as ask), reported split",
                   **interval(picks(outside, ranker.pick).groupby(level=0).mean()),
                   "consensus_same_questions": interval(
                       picks(outside, lambda g: selection.select("consensus", g)).groupby(level=0).mean()),
                   "coefficients": ranker.ranker.coefficients()}
    seeds = sorted(answers["seed"].unique().tolist())
    per_q = int(answers.groupby(["seed", "tid"]).size().iloc[0])
    lines = [f"{answers['tid'].nunique()} questions x {len(seeds)} seeds ({seeds}), {per_q} answers each, "
             f"{args.folds}-fold split by question (split seed {args.split_seed}); consensus: {args.similarity} "
             f"{args.threshold}; machine: {machine['cpu']} ({machine['cores']} cores, {args.threads} torch thread)", "",
             "| selection | accuracy | 95% interval (seeds) | per seed |", "|---|---|---|---|"]
    for r in rows + ([shipped] if shipped else []):
        lines.append(f"| {r['method']} | {r['mean']:.3f} | {r['low']:.3f}-{r['high']:.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in r['per_seed'])} |")
    if shipped:
        c = shipped["consensus_same_questions"]
        lines.append(f"| consensus, same reported split | {c['mean']:.3f} | {c['low']:.3f}-{c['high']:.3f} | "
                     f"{', '.join(f'{v:.3f}' for v in c['per_seed'])} |")
    lines.append(f"\nranker - consensus, paired over {paired['questions']} question x seed: {paired['mean']:+.3f} "
                 f"[{paired['low']:+.3f}, {paired['high']:+.3f}] (bootstrap 95%)")
    mean_coef = pd.DataFrame(coefficients).mean().round(3).to_dict()
    lines.append(f"ranker weights (standardised features, mean over folds): {mean_coef}")
    payload = {"machine": machine, "settings": vars(args), "methods": rows, "shipped_split": shipped,
               "ranker_minus_consensus": paired, "ranker_coefficients": mean_coef, "features_s": features_s,
               "fit_s": fit_s, "seconds": time.perf_counter() - started, "table": "\n".join(lines)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save_table(args.out, f"ranker{args.tag}", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
