"""The ground-truth benchmark of `evoforge ask`: which selection method keeps a correct answer.

    make bench-ask                 # or: .venv/bin/python benchmarks/ask_bench.py [--quick] [--seeds 3]

Per seed: a fresh population of experts (the tournament's own random experts) answers every question of
`data/ask/questions.yaml` `--repeats` times each (as `ask`'s iterations do: the same experts and sampling settings,
another generation seed per repeat), batched across questions (one model load; the tournament's `expert_answers`,
judges panel and the selection module's features, so the numbers are those of `ask`). Consensus clusters all
experts x repeats answers of a question, as `ask` keeps its answer over all its iterations' answers. Every
selection method then keeps one answer per question from the same answers. The questions split in two: every third question is the
labelled split (the verifier's calibration, the stacked model and the consensus threshold are fitted there), the
rest is where accuracy is reported. Open-ended tasks are scored by a held-out judge (a pairwise A/B question in the
instruct format, never used for selection) comparing the kept answer with each other answer, both orders.

`--features consensus` skips the judges' panel and the verifier (most of the time per seed) and reports only the
methods that need neither: single answer, ceiling and consensus (most central).

Writes benchmarks/results/<date>-<host>-ask[-quick]<tag>.json and prints the README's markdown table.
"""

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.judges import selection  # noqa: E402
from evoforge.judges.calibration import Calibrator, fit_calibrator  # noqa: E402
from evoforge.judges.measures import auc  # noqa: E402
from evoforge.core.config import TournamentConfig  # noqa: E402
from evoforge.core.experts import random_experts, update_value  # noqa: E402
from evoforge.judges.panel import fit_panel  # noqa: E402
from evoforge.steps.tournament import expert_answers, load_spec, task_questions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "data" / "ask" / "questions.yaml"
LABELLED = ROOT / "data" / "ask" / "labelled.jsonl"
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
WORD_THRESHOLDS = (0.2, 0.34, 0.5, 0.67)
EMBEDDING_THRESHOLDS = (0.7, 0.8, 0.85, 0.9, 0.95)
FEATURES = {"all": ("judges", "verifier", "words", "embedding"), "consensus": ("words", "embedding")}
HELD_OUT = ("### Instruction:\nTwo answers to the task below follow. Which answer is better: more helpful, correct "
            "and clear? Reply with A or B.\n\nTask: {task}\n\n### Input:\nA: {a}\n\nB: {b}\n\n### Response:")


def bench_setup(experts: int, max_new_tokens: int) -> tuple[TournamentConfig, dict]:
    """The benchmarks' tournament settings (ask's, with a short answer's budget) and the machine, printed."""
    from benchmarks.machine import machine_at_start

    config = TournamentConfig(instruction="benchmark", experts=experts, max_new_tokens=max_new_tokens,
                              continue_tokens=max(4, max_new_tokens // 3))
    machine = machine_at_start(config.precision)
    print(f"machine: {machine}", flush=True)
    return config, machine


def load_questions(path: Path = QUESTIONS) -> tuple[str, pd.DataFrame, list[str]]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    frame = pd.DataFrame(raw["questions"]).rename(columns={"q": "question"})
    frame["qid"] = range(len(frame))
    frame["labelled"] = frame["qid"] % 3 == 0
    return raw["prompt"], frame, list(raw["open"])


def collect(seed: int, tasks: pd.DataFrame, config: TournamentConfig, backend, embedder, timings: dict,
            repeats: int = 1, features: str = "all") -> tuple:
    """Every expert of a fresh population answers every task `repeats` times; the `features` of every answer.
    A task's answers are in (repeat, expert) order, the order of its similarity matrices' rows."""
    spec = load_spec()
    rng = np.random.default_rng([config.seed + seed, 2**31])
    experts = random_experts(config.experts, config.generator_models, config.sampling_ranges(), spec.personas,
                             spec.personas, rng, shots=0)
    jobs = [(e.expert_id, task) for task in tasks["task"] for e in experts]
    parts = []
    for repeat in range(repeats):
        # Another seed per repeat, as ask's iterations get (seed + repeat keeps repeat 0 the one-answer benchmark's
        # answers; expert_answers adds multiples of 64 per chunk, so repeats < 64 never share a seed).
        started = time.perf_counter()
        part = expert_answers({"smollm2": backend}, experts, jobs, config.continue_tokens, seed=1000 * seed + repeat,
                              batch_size=64)
        timings["generate_s"] += time.perf_counter() - started
        parts.append(part.assign(tid=np.repeat(np.arange(len(tasks)), len(experts)), repeat=repeat))
    answers = pd.concat(parts).sort_values(["tid", "repeat", "expert_id"], kind="stable", ignore_index=True)
    answers = answers.join(tasks.reset_index(drop=True), on="tid")
    answers["seed"] = seed
    if "judges" in FEATURES[features]:
        judge_and_verify(answers, tasks, spec, config, backend, timings)
    similarity = {}
    started = time.perf_counter()
    embeddings = embedder.embed(answers["text"].tolist())
    for tid, group in answers.groupby("tid"):
        similarity[(seed, tid, "embedding")] = selection.embedding_similarity(embeddings[group.index])
    timings["embed_s"] += time.perf_counter() - started
    started = time.perf_counter()
    for tid, group in answers.groupby("tid"):
        similarity[(seed, tid, "words")] = selection.word_similarity(group["text"].tolist(), group["task"].iloc[0])
    timings["words_s"] += time.perf_counter() - started
    return experts, answers, similarity


def judge_and_verify(answers: pd.DataFrame, tasks: pd.DataFrame, spec, config: TournamentConfig, backend,
                     timings: dict) -> None:
    """The judges' `score` and the verifier's `verifier_raw` of every answer, added to `answers` in place."""
    # The tournament's judges (its panel, its questions naming each answer's own task), all tasks in one batch.
    started = time.perf_counter()
    per_task = {task: task_questions(spec, task) for task in tasks["task"]}
    panel = fit_panel({"smollm2": backend}, config.judges, per_task[tasks["task"].iloc[0]], config.combine)
    judged = panel.judge({"smollm2": backend}, answers["text"].tolist(),
                         {name: [per_task[t][name] for t in answers["task"]] for name in panel.questions})
    judged.index = answers.index
    judged["score"] = judged[list(panel.columns.values())].mean(axis=1)
    answers[judged.columns] = judged
    timings["judges_s"] += time.perf_counter() - started
    started = time.perf_counter()
    answers["verifier_raw"] = selection.verifier_scores(backend, answers["task"].tolist(), answers["text"].tolist())
    timings["verifier_s"] += time.perf_counter() - started


def with_consensus(answers: pd.DataFrame, similarity: dict, kind: str, threshold: float) -> pd.DataFrame:
    """The consensus columns for every task's answers under one similarity and threshold."""
    parts = []
    for (seed, tid), group in answers.groupby(["seed", "tid"], sort=False):
        feats = selection.consensus_features(similarity[(seed, tid, kind)], threshold)
        feats.index = group.index
        parts.append(feats)
    return answers.drop(columns=["cluster", "agreement", "centrality"], errors="ignore").join(pd.concat(parts))


def kept(answers: pd.DataFrame, method: str, stacker=None) -> pd.Series:
    """Per (seed, task): the index of the answer `method` keeps."""
    return answers.groupby(["seed", "tid"], sort=False).apply(
        lambda g: g.index[selection.select(method, g.reset_index(drop=True), stacker)])


def accuracy_of(answers: pd.DataFrame, rows) -> pd.Series:
    """Accuracy per seed of the kept rows."""
    picked = answers.loc[np.asarray(rows)]
    return picked.groupby("seed")["correct"].mean()


def interval(per_seed: pd.Series) -> dict:
    values = per_seed.to_numpy(dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "per_seed": values.tolist()}
    half = T975.get(len(values) - 1, 1.96) * values.std(ddof=1) / np.sqrt(len(values))
    return {"mean": mean, "low": mean - half, "high": mean + half, "per_seed": values.tolist()}


def fit_threshold(answers: pd.DataFrame, similarity: dict, kind: str, grid) -> tuple[float, pd.DataFrame]:
    """The consensus threshold with the best accuracy on the labelled split (first of ties)."""
    train = answers[answers["labelled"]]
    scored = []
    for threshold in grid:
        frame = with_consensus(train, similarity, kind, threshold)
        scored.append((accuracy_of(frame, kept(frame, "consensus")).mean(), -len(scored), threshold))
    best = max(scored)[2]
    return best, with_consensus(answers, similarity, kind, best)


def learned_values(answers: pd.DataFrame, experts: int, config: TournamentConfig, method: str, stacker=None):
    """Expert values after a run of labelled questions, each rewarded by agreeing with the kept answer."""
    values = np.zeros(experts)
    for _, group in answers[answers["labelled"]].groupby("tid", sort=True):
        group = group.reset_index(drop=True)
        row = selection.select(method, group, stacker)
        reward = selection.agreement_reward(group["cluster"].to_numpy(), row)
        for i, expert_id in enumerate(group["expert_id"]):
            values = update_value(values, int(expert_id), float(reward[i]), config.values.learning_rate,
                                  config.values.discount)
    return values


def answering_k(answers: pd.DataFrame, similarity: dict, kind: str, threshold: float, values_by_seed: dict,
                k: int, method: str, stacker=None, draws: int = 20) -> dict:
    """Accuracy on the reported split when only K experts answer: the K best by learned value vs random K."""
    test = answers[~answers["labelled"]]
    by_value, by_chance = [], []
    for seed, group in test.groupby("seed"):
        values = values_by_seed[seed]
        top = set(np.argsort(-values, kind="stable")[:k].tolist())
        rng = np.random.default_rng(seed)
        randoms = [set(rng.choice(len(values), k, replace=False).tolist()) for _ in range(draws)]
        for chosen, sink in [(top, by_value)] + [(r, by_chance) for r in randoms]:
            sub = group[group["expert_id"].isin(chosen)]
            sub = with_consensus_subset(sub, similarity, kind, threshold)
            sink.append((seed, float(sub.loc[kept(sub, method, stacker)]["correct"].mean())))
    value_acc = pd.DataFrame(by_value, columns=["seed", "acc"]).groupby("seed")["acc"].mean()
    chance_acc = pd.DataFrame(by_chance, columns=["seed", "acc"]).groupby("seed")["acc"].mean()
    return {"k": k, "by_value": interval(value_acc), "random_k": interval(chance_acc)}


def with_consensus_subset(sub: pd.DataFrame, similarity: dict, kind: str, threshold: float) -> pd.DataFrame:
    """Consensus recomputed among the answers of a subset of experts only."""
    parts = []
    for (seed, tid), group in sub.groupby(["seed", "tid"], sort=False):
        full = similarity[(seed, tid, kind)]
        positions = group["position"].to_numpy()  # each answer's row in its task's similarity matrix
        feats = selection.consensus_features(full[np.ix_(positions, positions)], threshold)
        feats.index = group.index
        parts.append(feats)
    return sub.drop(columns=["cluster", "agreement", "centrality"], errors="ignore").join(pd.concat(parts))


def held_out_wins(backend, opens: pd.DataFrame, rows) -> pd.Series:
    """Per answer row: the share of the other answers to its task that the held-out judge finds worse than it
    (P(this one better) averaged over both orders; identical texts count half)."""
    prompts, pairs = [], []
    for row in sorted(set(rows)):
        kept_row = opens.loc[row]
        others = opens[(opens["seed"] == kept_row["seed"]) & (opens["tid"] == kept_row["tid"]) & (opens.index != row)]
        for other in others["text"]:
            for a, b, kept_is_a in ((kept_row["text"], other, True), (other, kept_row["text"], False)):
                prompts.append(HELD_OUT.replace("{task}", kept_row["task"]).replace("{a}", a[:600]).replace("{b}", b[:600]))
                pairs.append((kept_row["seed"], row, kept_is_a, a == b))
    logprobs = backend.option_logprobs(prompts, [" A", " B"], desc="held-out judge")
    p_a = 1.0 / (1.0 + np.exp(logprobs[:, 1] - logprobs[:, 0]))
    frame = pd.DataFrame(pairs, columns=["seed", "row", "kept_is_a", "same"])
    frame["p_kept"] = np.where(frame["kept_is_a"], p_a, 1 - p_a)
    pair = frame.groupby(["seed", "row", np.arange(len(frame)) // 2]).agg(p=("p_kept", "mean"), same=("same", "first"))
    pair["win"] = np.where(pair["same"], 0.5, (pair["p"] > 0.5).astype(float))
    return pair.groupby("row")["win"].mean()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few questions, experts and tokens")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--cached-seeds", action="store_true", help="analyse the seeds collected in --cache")
    parser.add_argument("--collect-only", action="store_true", help="collect answers into --cache, no analysis")
    parser.add_argument("--experts", type=int, default=4, help="experts per population (each answers every question)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="answers per expert and question, each with another generation seed, as ask's "
                        "iterations (ask's defaults: 4 experts x 2-4 iterations)")
    parser.add_argument("--features", choices=sorted(FEATURES), default="all",
                        help="consensus: skip the judges' panel and the verifier (most of the time per seed); "
                        "only the methods that need neither are reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); 1 where other jobs use the machine's cores")
    parser.add_argument("--tag", default="", help="suffix of the results file's name (e.g. '-repeats3')")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--cache", default=None, help="folder to keep collected answers in (reused when present)")
    parser.add_argument("--write-labelled", action="store_true",
                        help=f"write seed 0's labelled-split answers to {LABELLED.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more (answers per expert and question), got {args.repeats}")
    if args.write_labelled and args.features != "all":
        parser.error("--write-labelled needs the judges' scores and the verifier: use --features all")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from models.embedder import load_embedder
    from models.loading import load_backend

    prompt, questions, open_tasks = load_questions()
    if args.quick:
        questions, open_tasks = questions.iloc[:6].copy(), open_tasks[:1]
        args.seeds, args.experts, args.max_new_tokens = 1, 3, 8
    questions["task"] = [prompt.replace("{question}", q) for q in questions["question"]]
    opens = pd.DataFrame({"task": open_tasks, "qid": -1 - np.arange(len(open_tasks)), "labelled": False})
    config, machine = bench_setup(args.experts, args.max_new_tokens)
    started = time.perf_counter()
    backend = load_backend("smollm2", config.precision)
    embedder = load_embedder("minilm")
    timings = dict.fromkeys(["generate_s", "judges_s", "verifier_s", "embed_s", "words_s"], 0.0)
    frames, open_frames, similarity = [], [], {}
    tasks = pd.concat([questions, opens], ignore_index=True)
    cache = Path(args.cache) if args.cache else None
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.cached_seeds:  # analyse whichever seeds are collected in --cache
        seeds = sorted(int(p.stem.removeprefix("seed")) for p in Path(args.cache).glob("seed*.parquet"))
        args.seeds = len(seeds)
    for seed in seeds:
        cached = cache / f"seed{seed}.parquet" if cache else None
        if cached and cached.exists():
            answers = pd.read_parquet(cached)
            check_cached(answers, cached, args)
            sims = {tuple(json.loads(k)): np.array(v) for k, v in
                    json.loads((cache / f"seed{seed}.json").read_text()).items()}
            for key, value in json.loads((cache / f"seed{seed}-timings.json").read_text()).items():
                timings[key] += value
        else:
            own = dict.fromkeys(timings, 0.0)
            _, answers, sims = collect(seed, tasks, config, backend, embedder, own, args.repeats, args.features)
            timings = {key: timings[key] + own[key] for key in timings}
            if cache:
                cache.mkdir(parents=True, exist_ok=True)
                answers.to_parquet(cached)
                (cache / f"seed{seed}.json").write_text(json.dumps({json.dumps([int(s), int(t), k]): v.tolist()
                                                                    for (s, t, k), v in sims.items()}))
                (cache / f"seed{seed}-timings.json").write_text(json.dumps(own))
        similarity.update(sims)
        answers["position"] = answers.groupby("tid").cumcount()  # its row in its task's similarity matrices
        is_open = answers["qid"] < 0
        answers["correct"] = [selection.contains_answer(t, a) if not o else np.nan
                              for t, a, o in zip(answers["text"], answers["answers"], is_open)]
        frames.append(answers[~is_open])
        open_frames.append(answers[is_open])
        print(f"seed {seed}: {len(answers)} answers, {timings}", flush=True)
    if args.collect_only:
        return 0
    answers = pd.concat(frames, ignore_index=True)
    opens = pd.concat(open_frames, ignore_index=True)
    n_experts = args.experts
    per_question = n_experts * args.repeats  # answers each method chooses among
    computed = FEATURES[args.features]
    judged = "judges" in computed
    train = answers["labelled"]

    if judged:
        # The verifier: Platt-calibrated on the labelled split (monotone: its pick within a task is the raw argmax).
        try:
            calibrator = fit_calibrator("platt", answers.loc[train, "verifier_raw"], answers.loc[train, "correct"])
        except ValueError as error:  # a --quick split may hold answers of one kind only: nothing to fit
            print(f"verifier left uncalibrated: {error}")
            calibrator = Calibrator()
        answers["verifier"] = calibrator(answers["verifier_raw"])
        opens["verifier"] = calibrator(opens["verifier_raw"])
    test = answers[~train]
    results = {"machine": machine, "settings": {"seeds": args.seeds, "seed_ids": seeds, "experts": n_experts,
                                                "repeats": args.repeats, "answers_per_question": per_question,
                                                "features": args.features, "computed_features": list(computed),
                                                "skipped_features": [f for f in FEATURES["all"] if f not in computed],
                                                "max_new_tokens": args.max_new_tokens,
                                                "questions": int(len(questions)),
                                                "reported_questions": int((~questions["labelled"]).sum()),
                                                "labelled_questions": int(questions["labelled"].sum()),
                                                "open_tasks": len(open_tasks)}}
    thresholds = {}
    consensus_frames = {}
    for kind, grid in (("words", WORD_THRESHOLDS), ("embedding", EMBEDDING_THRESHOLDS)):
        thresholds[kind], consensus_frames[kind] = fit_threshold(answers, similarity, kind, grid)
    results["consensus_thresholds"] = thresholds
    # AUC of each feature for "this answer is correct", over the reported split.
    aucs = {"judges score": auc(test["score"], test["correct"]),
            "verifier": auc(test["verifier"], test["correct"])} if judged else {}
    for kind, frame in consensus_frames.items():
        t = frame[~frame["labelled"]]
        aucs[f"agreement ({kind})"] = auc(t["agreement"], t["correct"])
        aucs[f"centrality ({kind})"] = auc(t["centrality"], t["correct"])
    results["feature_auc"] = aucs
    print("feature AUC:", {k: round(v, 3) for k, v in aucs.items()}, flush=True)

    rows = []
    gen_s = timings["generate_s"] / args.seeds  # all repeats
    cost = {"judges": timings["judges_s"], "verifier": timings["verifier_s"], "embedding": timings["embed_s"],
            "words": timings["words_s"]}
    cost = {k: v / args.seeds for k, v in cost.items()}  # per seed: all questions and open tasks

    def add(name, per_seed, answers_per_q, seconds, note=""):
        rows.append({"method": name, **interval(per_seed), "answers_per_question": answers_per_q,
                     "wall_s_per_seed": seconds, "note": note})

    add("single answer (mean over answers)", test.groupby("seed")["correct"].mean(), 1, gen_s / per_question)
    add("ceiling (some answer correct)", test.groupby(["seed", "tid"])["correct"].max().groupby("seed").mean(),
        per_question, gen_s)
    if judged:
        add("judges", accuracy_of(test, kept(test, "judges")), per_question, gen_s + cost["judges"])
    consensus_rows = {}  # the consensus row each similarity is ranked by (with the judges' tie-break where run)
    for kind, frame in consensus_frames.items():
        t = frame[~frame["labelled"]]
        sim_cost = cost["words"] if kind == "words" else cost["embedding"]
        if judged:
            add(f"consensus ({kind}, threshold {thresholds[kind]})", accuracy_of(t, kept(t, "consensus")),
                per_question, gen_s + cost["judges"] + sim_cost, "ties by judges score")
            consensus_rows[kind] = rows[-1]
        add(f"consensus ({kind}{'' if judged else f', threshold {thresholds[kind]}'}) most central",
            accuracy_of(t, kept(t.drop(columns="score", errors="ignore"), "consensus")), per_question,
            gen_s + sim_cost, "no judges")
        consensus_rows.setdefault(kind, rows[-1])
    if judged:
        add("verifier", accuracy_of(test, kept(test, "verifier")), per_question, gen_s + cost["verifier"])
    best_kind = max(thresholds, key=lambda k: consensus_rows[k]["mean"])
    full = consensus_frames[best_kind]
    stacker = None
    if judged:
        full["verifier"] = answers["verifier"]
        # The stacked model as `ask` fits it (selection.fit_selector) on the labelled split's answers.
        labelled = full[full["labelled"]].assign(group=lambda f: f["seed"] * 10_000 + f["tid"])
        try:
            stacker = selection.fit_selector("stacked", selection.Consensus(best_kind, thresholds[best_kind]),
                                             labelled, embedder).stacker
        except ValueError as error:  # as above: a --quick split of one kind
            print(f"stacked left out: {error}")
    if stacker is not None:
        t = full[~full["labelled"]]
        add(f"stacked (judges + agreement ({best_kind}) + verifier)", accuracy_of(t, kept(t, "stacked", stacker)),
            per_question, gen_s + cost["judges"] + cost["verifier"] + cost[best_kind])
        results["stacked_coefficients"] = dict(zip(selection.STACKED_FEATURES,
                                                   stacker.model.coef_[0].round(3).tolist()))
    results["methods"] = rows
    results["best_consensus_similarity"] = best_kind
    for r in rows:
        print(f"  {r['method']:<58} {r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]  {r['wall_s_per_seed']:.0f} s",
              flush=True)

    # Expert values learned over the labelled questions (reward: agreement with the kept answer), then --answering K.
    values_by_seed = {s: learned_values(full[full["seed"] == s], n_experts, config, "consensus")
                      for s in seeds}
    expert_acc = test.groupby(["seed", "expert_id"])["correct"].mean()
    from scipy.stats import spearmanr

    rank = [spearmanr(values_by_seed[s], expert_acc.loc[s].reindex(range(n_experts)).to_numpy())[0]
            for s in seeds]
    results["values"] = {"spearman_value_vs_accuracy": rank,
                         "values": {s: v.round(3).tolist() for s, v in values_by_seed.items()},
                         "expert_accuracy": {s: expert_acc.loc[s].round(3).tolist() for s in seeds},
                         "answering": [answering_k(full, similarity, best_kind, thresholds[best_kind], values_by_seed,
                                                   k, "consensus") for k in sorted({1, 2, 3, n_experts // 2} - {0})
                                       if k < n_experts]}
    for a in results["values"]["answering"]:
        print(f"  answering {a['k']}: by value {a['by_value']['mean']:.3f}, random {a['random_k']['mean']:.3f}",
              flush=True)

    # Open-ended: the held-out judge compares each method's kept answer with the other answers.
    judging = time.perf_counter()
    opens_c = with_consensus(opens, similarity, best_kind, thresholds[best_kind])
    open_rows = []
    methods = [m for m in ("judges", "consensus", "verifier", "stacked")
               if m == "consensus" or (judged and (m != "stacked" or stacker is not None))]
    picks = {m: kept(opens_c, m, stacker).to_numpy() for m in methods}
    # Each kept answer is compared once, however many methods keep it.
    wins = held_out_wins(backend, opens_c, np.concatenate(list(picks.values())))
    for method in methods:
        per_seed = pd.Series(wins.loc[picks[method]].to_numpy(), index=opens_c.loc[picks[method], "seed"])
        open_rows.append({"method": method, **interval(per_seed.groupby(level=0).mean())})
    results["open_ended"] = open_rows
    results["held_out_judge_s"] = time.perf_counter() - judging
    for r in open_rows:
        print(f"  open-ended {r['method']:<10} held-out judge prefers kept {r['mean']:.3f} "
              f"[{r['low']:.3f}, {r['high']:.3f}]", flush=True)
    results["timings"] = timings
    results["seconds"] = time.perf_counter() - started
    results["markdown"] = markdown(results)
    print(results["markdown"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now(timezone.utc):%Y-%m-%d}-{machine['host']}-ask{'-quick' if args.quick else ''}{args.tag}"
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {path}")
    if args.write_labelled:
        keep = labelled[labelled["seed"] == 0][["group", "question", "task", "text", "correct", "score",
                                                  "verifier_raw"]]
        keep.assign(correct=keep["correct"].astype(int)).to_json(LABELLED, orient="records", lines=True)
        print(f"wrote {LABELLED}")
    return 0


def check_cached(answers: pd.DataFrame, path: Path, args) -> None:
    """A cached seed must hold what this run measures: its experts, repeats and features."""
    repeats = answers["repeat"].nunique() if "repeat" in answers else 1
    experts = answers["expert_id"].nunique()
    missing = {"score", "verifier_raw"} - set(answers) if args.features == "all" else set()
    if (repeats, experts) != (args.repeats, args.experts) or missing:
        raise SystemExit(f"--cache: {path} holds {experts} experts x {repeats} repeats"
                         f"{' without ' + ', '.join(sorted(missing)) if missing else ''}; this run asks for "
                         f"--experts {args.experts} --repeats {args.repeats} --features {args.features}: "
                         "give another --cache folder (or matching options)")


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"{s['reported_questions']} reported questions ({s['labelled_questions']} more in the labelled split), "
             f"{s['experts']} experts x {s.get('repeats', 1)} answers each, features: "
             f"{', '.join(s.get('computed_features', FEATURES['all']))}, {s['seeds']} seeds, machine: "
             f"{results['machine']['cpu']} ({results['machine']['cores']} cores, "
             f"{results['machine']['torch_threads']} torch threads, {results['machine']['precision']})", "",
             "| selection | accuracy | 95% interval (seeds) | answers / question | wall s / seed |", "|---|---|---|---|---|"]
    for r in results["methods"]:
        lines.append(f"| {r['method']} | {r['mean']:.3f} | {r['low']:.3f}-{r['high']:.3f} | "
                     f"{r['answers_per_question']} | {r['wall_s_per_seed']:.0f} |")
    lines += ["", "| open-ended: held-out judge prefers the kept answer over another | share | 95% interval |",
              "|---|---|---|"]
    lines += [f"| {r['method']} | {r['mean']:.3f} | {r['low']:.3f}-{r['high']:.3f} |" for r in results["open_ended"]]
    lines += ["", "| --answering K | K best by learned value | random K |", "|---|---|---|"]
    lines += [f"| {a['k']} | {a['by_value']['mean']:.3f} | {a['random_k']['mean']:.3f} |"
              for a in results["values"]["answering"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
