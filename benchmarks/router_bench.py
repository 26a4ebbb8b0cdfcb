"""The router against epsilon-greedy gating, in runs and in `ask` (issue 18, "Specialists and an integrating core").

    .venv/bin/python benchmarks/router_bench.py [--parts runs ask] [--seeds 0 1 2]

`runs`: the real `evolution_run` flow per domain (opinions, stories), seed and arm, in one process (models and the
fitted panel shared). Both arms aim every candidate at a target niche drawn the same way (`search: target`) and
spend the same budget (generations x batch_size candidates, the same judges); they differ only in who writes it:
`epsilon` (the gating policy: epsilon-greedy over one value per expert, `experts_per_generation` experts share the
batch) or `router` (per candidate, the expert with the most archive-improvement credit on that and nearby cells,
epsilon-greedy on the same schedule). Reports final QD score, coverage, the judged candidates' mean quality, tokens
and the generations' wall time; per domain the router's QD ratio to epsilon with its bootstrap 95% interval over
seeds; for the router its routing metrics (share of picks to the best expert per niche, entropy). Writes
benchmarks/results/<date>-<host>-router-runs.json.

`ask`: the ask benchmark's short questions (data/ask/questions.yaml, benchmarks/ask_bench.py's `collect`: a fresh
population of `--ask-experts` experts per seed answers every question once, up to 24 new tokens, with the
tournament's own code). Then `ask` is replayed over those answers, task after task, as a series of asks with a saved
population would go: each task `--answering` K experts answer, consensus (words, 0.2, most central) keeps one, and
every answering expert is credited 1 where its answer agrees with the kept one (ask's `agreement` signal). Arms, all
with ask's first-iteration exploration (epsilon 0.2): `epsilon` (K experts by value, `routing: none`), `router`
(K experts by credit on earlier tasks near this one, MiniLM embeddings, `routing: router`), and two references:
`all` (every expert answers: E/K times the tokens) and `oracle` (the K experts most often right
on the labelled split's questions of the same kind: what routing could reach if credit were truth). The labelled
split (every third question) comes first, in a seeded random order, then the held-out rest; accuracy (the kept
answer contains an accepted answer) and tokens are reported on the held-out questions, `--draws` replays per seed
(exploration differs) averaged. Writes benchmarks/results/<date>-<host>-router-ask.json.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.judges.panel import questions  # noqa: E402  (evoforge first: telemetry off, Prefect's start-up wait)

ARMS = ["epsilon", "router"]


def run_config(arm: str, domain: str, seed: int, args, out: Path, stamp: str):
    from evoforge.core.config import RunConfig

    return RunConfig(domain=domain, seed=seed, out=str(out), heldout_judge=False, experts=args.experts,
                     generations=args.generations, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                     search="target", gating={"policy": arm}, run_name=f"{domain}-{arm}-s{seed}-{stamp}",
                     experiment="evoforge-router")


def run_record(run_dir: Path, arm: str) -> dict:
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain

    config = RunConfig(**json.loads((run_dir / "config.json").read_text()))
    history = json.loads((run_dir / "state.json").read_text())["history"]
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    judged = candidates[candidates["quality"].notna()]
    metrics = [json.loads(p.read_text()) for p in sorted((run_dir / "metrics").glob("*.json"))] \
        if (run_dir / "metrics").is_dir() else []
    record = {
        "arm": arm, "domain": config.domain, "seed": config.seed, "run_dir": str(run_dir),
        "qd_score": history[-1]["qd_score"], "coverage": history[-1]["coverage"],
        "mean_quality": float(judged["quality"].mean()) if len(judged) else float("nan"),
        "judged_texts": len(judged), "per_text": len(config.judges) * len(questions(load_domain(config.domain))),
        "judge_calls": int(sum(h["judge_calls"] for h in history)),
        "tokens": int(sum(h["tokens_generated"] for h in history)),
        "wall_s": float(sum(h["seconds_total"] for h in history)),
        "experts_writing": candidates["expert_id"].value_counts().sort_index().to_dict(),
    }
    for key in ("router/best_share", "router/entropy", "router/specialists"):
        values = [m[key] for m in metrics if key in m]
        if values:
            record[key] = float(np.mean(values))
    return record


def runs_table(records: list[dict]) -> str:
    """Per domain and arm, means over seeds; the router's QD ratio to epsilon (bootstrap 95% interval)."""
    from benchmarks.science import interval, ratio_interval

    frame = pd.DataFrame(records)
    lines = ["| domain | arm | seeds | QD score (mean, 95% CI) | QD ratio to epsilon (95% CI) | coverage | judged "
             "quality | tokens per run | generation wall s per run | picks to the best expert | routing entropy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for domain, rows in frame.groupby("domain", sort=False):
        base = rows[rows["arm"] == "epsilon"]["qd_score"]
        for arm in ARMS:
            r = rows[rows["arm"] == arm]
            if not len(r):
                continue
            qd = interval(r["qd_score"])
            ratio = ratio_interval(r["qd_score"], base, rng) if len(base) else (np.nan,) * 3
            share = f"{r['router/best_share'].mean():.0%}" if "router/best_share" in r and r["router/best_share"].notna().any() else "-"
            entropy = f"{r['router/entropy'].mean():.2f}" if "router/entropy" in r and r["router/entropy"].notna().any() else "-"
            lines.append(f"| {domain} | {arm} | {len(r)} | {qd[0]:.2f} ({qd[1]:.2f}-{qd[2]:.2f}) | "
                         f"{ratio[0]:.2f} ({ratio[1]:.2f}-{ratio[2]:.2f}) | {r['coverage'].mean():.0%} | "
                         f"{r['mean_quality'].mean():.3f} | {r['tokens'].mean():,.0f} | {r['wall_s'].mean():.0f} | "
                         f"{share} | {entropy} |")
    return "\n".join(lines)


def runs_part(args, machine: dict) -> dict:
    from benchmarks.machine import save_table
    from flows.evolution import evolution_run
    from models.loading import load_backend

    out = Path(args.out or tempfile.mkdtemp(prefix="evoforge-router-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    load_backend("smollm2", "auto")  # once: every run's own load_backend call returns this copy
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    started, records = time.perf_counter(), []
    for domain in args.domains:
        for seed in args.seeds:
            for arm in ARMS:  # both arms of a seed back to back: the machine's load changes slowly
                summary = evolution_run(run_config(arm, domain, seed, args, out, stamp))
                records.append(run_record(Path(summary["run_dir"]), arm))
                r = records[-1]
                print(f"{domain} {arm} seed {seed}: QD {r['qd_score']:.2f}, coverage {r['coverage']:.0%}, "
                      f"quality {r['mean_quality']:.3f}, {r['tokens']} tokens, {r['wall_s']:.0f} s", flush=True)
                payload = {"machine": machine, "budget": vars(args), "records": records, "table": runs_table(records),
                           "seconds": time.perf_counter() - started}
                save_table(args.results, "router-runs", payload)  # after every run: a stopped benchmark keeps them
    return payload


ASK_ARMS = ["epsilon", "router", "all", "oracle"]


def replay(tasks: list[int], answers: dict, similarity: dict, embeddings: dict, kinds: dict, n_experts: int, k: int,
           arm: str, config, bandwidth: float, oracle: dict, rng: np.random.Generator) -> list[dict]:
    """One series of asks over `tasks` (ids into `answers`: each task's answers, a row per expert in id order):
    who answers, what consensus keeps, and how the values or the router's credit learn from it."""
    from evoforge.core.experts import pick_experts, update_value
    from evoforge.judges import selection
    from evoforge.search.router import Router

    eps, lr, discount = config.values.epsilon_start, config.values.learning_rate, config.values.discount
    values, inputs, experts, credits, rows = np.zeros(n_experts), [], [], [], []
    for tid in tasks:
        if arm == "all":
            picked = list(range(n_experts))
        elif arm == "oracle":
            picked = list(oracle[kinds[tid]][:k])
        elif arm == "router":
            router = Router(n_experts, np.array(inputs).reshape(len(inputs), len(embeddings[tid])),
                            np.array(experts, dtype=int),
                            np.array(credits), bandwidth)
            picked = router.route(embeddings[tid], k, eps, rng)[0]
        else:
            picked = pick_experts(values, k, eps, rng)
        picked = sorted(picked)
        group = answers[tid].iloc[picked]
        features = selection.consensus_features(similarity[tid][np.ix_(picked, picked)], config.consensus_threshold)
        kept = selection.select("consensus", features)
        agree = selection.agreement_reward(features["cluster"].to_numpy(), kept)
        for expert, credit in zip(picked, agree):
            values = update_value(values, expert, float(credit), lr, discount)
            inputs.append(embeddings[tid])
            experts.append(expert)
            credits.append(float(credit))
        rows.append({"tid": tid, "correct": bool(group["correct"].iloc[kept]), "tokens": int(group["new_tokens"].sum()),
                     "picked": picked})
    return rows


def ask_part(args, machine: dict) -> dict:
    """See the module's docstring."""
    from benchmarks.ask_bench import collect, load_questions
    from benchmarks.machine import save_table
    from evoforge.core.config import TournamentConfig
    from evoforge.judges import selection
    from models.embedder import load_embedder
    from models.loading import load_backend

    prompt, questions, _ = load_questions()
    questions = questions.iloc[: args.ask_questions].copy() if args.ask_questions else questions
    questions["task"] = [prompt.replace("{question}", q) for q in questions["question"]]
    config = TournamentConfig(instruction="benchmark", experts=args.ask_experts, max_new_tokens=24,
                              continue_tokens=8)
    backend, embedder = load_backend("smollm2", config.precision), load_embedder("minilm")
    task_embeddings = embedder.embed(questions["task"].tolist())
    started, per_seed, records = time.perf_counter(), [], []
    for seed in args.seeds:
        timings = dict.fromkeys(["generate_s", "embed_s", "words_s"], 0.0)
        _, answers, sims = collect(seed, questions, config, backend, embedder, timings, 1, "consensus")
        answers["correct"] = [selection.contains_answer(t, a) for t, a in zip(answers["text"], answers["answers"])]
        by_task = {tid: group.sort_values("expert_id") for tid, group in answers.groupby("tid")}
        similarity = {tid: sims[(seed, tid, "words")] for tid in by_task}
        embeddings = dict(enumerate(task_embeddings))
        kinds = dict(enumerate(questions["kind"]))
        rng = np.random.default_rng(seed)
        learn = [int(t) for t in rng.permutation(np.flatnonzero(questions["labelled"]))]
        held_out = [int(t) for t in rng.permutation(np.flatnonzero(~questions["labelled"]))]
        labelled = answers[answers["tid"].isin(learn)]
        right = labelled.groupby(["kind", "expert_id"])["correct"].mean().unstack()  # kind x expert
        oracle = {kind: np.argsort(-right.loc[kind].to_numpy(), kind="stable") for kind in right.index}
        held = answers[answers["tid"].isin(held_out)]
        expert_accuracy = held.groupby(["kind", "expert_id"])["correct"].mean().unstack()
        for arm in ASK_ARMS:
            draws = 1 if arm in ("all", "oracle") else args.draws
            for draw in range(draws):
                rows = replay(learn + held_out, by_task, similarity, embeddings, kinds, args.ask_experts,
                              args.answering, arm, config, args.ask_bandwidth, oracle,
                              np.random.default_rng([seed, draw]))
                tail = pd.DataFrame(rows[len(learn):])
                records.append({"seed": seed, "arm": arm, "draw": draw, "accuracy": float(tail["correct"].mean()),
                                "tokens_per_task": float(tail["tokens"].mean()),
                                "learning_accuracy": float(pd.DataFrame(rows[:len(learn)])["correct"].mean())})
        per_seed.append({"seed": seed, "generate_s": timings["generate_s"],
                         "expert_accuracy_by_kind": expert_accuracy.round(3).to_dict(),
                         "best_expert_by_kind": {k: int(np.argmax(v)) for k, v in expert_accuracy.iterrows()}})
        print(f"ask seed {seed}: {len(answers)} answers in {timings['generate_s']:.0f} s", flush=True)
        payload = {"machine": machine, "settings": vars(args), "records": records, "per_seed": per_seed,
                   "table": ask_table(records), "seconds": time.perf_counter() - started}
        save_table(args.results, "router-ask", payload)
    return payload


def ask_table(records: list[dict]) -> str:
    from benchmarks.science import interval

    frame = pd.DataFrame(records).groupby(["arm", "seed"], sort=False).mean(numeric_only=True).reset_index()
    base = frame[frame["arm"] == "epsilon"].set_index("seed")["accuracy"]
    lines = ["| arm | seeds | held-out accuracy (mean, 95% CI over seeds) | minus epsilon, paired by seed (mean, 95% CI; "
             "per seed) | tokens per task |", "|---|---|---|---|---|"]
    for arm in ASK_ARMS:
        r = frame[frame["arm"] == arm].set_index("seed")
        acc = interval(r["accuracy"])
        paired = (r["accuracy"] - base.reindex(r.index)).to_numpy()
        diff = interval(paired)
        lines.append(f"| {arm} | {len(r)} | {acc[0]:.3f} ({acc[1]:.3f}-{acc[2]:.3f}) | {diff[0]:+.3f} "
                     f"({diff[1]:+.3f} to {diff[2]:+.3f}; {', '.join(f'{d:+.3f}' for d in paired)}) | "
                     f"{r['tokens_per_task'].mean():.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["runs", "ask"], choices=["runs", "ask"])
    p.add_argument("--domains", nargs="+", default=["opinions", "stories"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--ask-experts", type=int, default=6, help="ask: experts in each seed's population")
    p.add_argument("--answering", type=int, default=3, help="ask: experts that answer each task (top-k)")
    p.add_argument("--ask-bandwidth", type=float, default=0.5, help="ask: the router's bandwidth (routing_bandwidth)")
    p.add_argument("--ask-questions", type=int, default=None, help="ask: the first N questions only (a smoke run)")
    p.add_argument("--draws", type=int, default=5, help="ask: replays per seed (exploration differs)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cores are shared)")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report", nargs="+", metavar="JSON", help="no runs: merge the records of these runs-part result "
                   "files (e.g. seeds run in two processes) into one table")
    args = p.parse_args(argv)
    if args.report:
        from benchmarks.machine import save_table

        parts = [json.loads(Path(f).read_text()) for f in args.report]
        records = [r for part in parts for r in part["records"]]
        payload = {"machine": parts[0]["machine"], "budget": parts[0]["budget"], "merged_from": args.report,
                   "records": records, "table": runs_table(records)}
        save_table(args.results, "router-runs", payload)
        return payload
    import torch

    from benchmarks.machine import machine_at_start

    torch.set_num_threads(args.threads)
    machine = machine_at_start()
    results = {}
    if "runs" in args.parts:
        results["runs"] = runs_part(args, machine)
    if "ask" in args.parts:
        results["ask"] = ask_part(args, machine)
    return results


if __name__ == "__main__":
    main()
