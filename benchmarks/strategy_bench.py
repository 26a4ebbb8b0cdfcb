"""Search strategies against plain sampling: quality at equal judge calls, and what each costs in wall time.

    .venv/bin/python benchmarks/strategy_bench.py [--domain opinions] [--prompts 4]

For each of a few few-shot prompts (the run's generator prompt: a system prompt and 3 items of the domain's pool),
every method writes one text, and the run's judge panel (the default two judges, calibrated as in a run) judges
each final text once: every method spends the same judge calls. Methods: `sample` (one sampled text: today),
`best_of_n` (n sampled texts, the one the value model rates best), `beam`, `tot`, `mcts` (evoforge.search.strategies;
ToT and MCTS valued by the value model's predicted quality). The value model is fitted on the real run in
tests/data/opinions-s0-run (128 judged candidates). Reports per method the judges' mean quality and the mean
|measure - 0.5| (how far from neutral, where the outer niches lie), the QD score of the archive its texts fill,
model calls, texts valued and wall time per text. Writes benchmarks/results/<date>-<host>-strategies.json.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.search.strategies import SearchResult, SentenceExpander, beam, mcts, tot  # noqa: E402

METHODS = ["sample", "best_of_n", "beam", "tot", "mcts"]


def best_of_n(expander: SentenceExpander, values, n: int) -> SearchResult:
    """n sampled texts in one call; the one `values` rates best."""
    texts = expander.complete([""] * n)
    scores = np.asarray(values(texts), dtype=float)
    best = int(np.argmax(scores))
    return SearchResult(texts[best], float(scores[best]), 1, 1, n)


def run_method(method: str, expander: SentenceExpander, values, args) -> SearchResult:
    if method == "sample":
        text = expander.complete([""])[0]
        return SearchResult(text, float("nan"), 1)
    if method == "best_of_n":
        return best_of_n(expander, values, args.n)
    if method == "beam":
        return beam(expander, width=args.width, per_beam=args.per_beam, max_steps=args.max_steps)
    if method == "tot":
        return tot(expander, values, k=args.k, keep=args.keep, max_steps=args.max_steps)
    return mcts(expander, values, iterations=args.iterations, k=args.k)


def markdown_table(rows: pd.DataFrame, judge_calls_per_text: int) -> str:
    lines = ["| method | judges' quality (mean, 95% CI) | mean distance of the measure from 0.5 | QD score of its texts | judge calls "
             "| model calls per text | texts valued per text | wall s per text |", "|---|---|---|---|---|---|---|---|"]
    from benchmarks.science import interval

    for method in METHODS:
        r = rows[rows["method"] == method]
        if not len(r):
            continue
        q = interval(r["quality"])
        lines.append(f"| {method} | {q[0]:.3f} ({q[1]:.3f}-{q[2]:.3f}) | {r['extremeness'].mean():.3f} | "
                     f"{r.attrs.get('qd', {}).get(method, float('nan')):.2f} | {len(r) * judge_calls_per_text} | "
                     f"{r['model_calls'].mean():.1f} | {r['valued'].mean():.1f} | {r['wall_s'].mean():.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domain", default="opinions")
    p.add_argument("--prompts", type=int, default=4, help="few-shot prompts (each method writes one text per prompt)")
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--sentence-tokens", type=int, default=20)
    p.add_argument("--n", type=int, default=6, help="best_of_n: texts sampled")
    p.add_argument("--width", type=int, default=2)
    p.add_argument("--per-beam", type=int, default=2)
    p.add_argument("--k", type=int, default=3, help="tot and mcts: continuations per expanded node")
    p.add_argument("--keep", type=int, default=2, help="tot: nodes kept per step")
    p.add_argument("--iterations", type=int, default=4, help="mcts iterations")
    p.add_argument("--max-steps", type=int, default=3, help="beam and tot: sentences at most")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    import torch

    from benchmarks.machine import machine_at_start, save_table
    from evoforge.core.archive import QDArchive
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain
    from evoforge.core.prompts import few_shot_prompt, trim_to_last_sentence
    from evoforge.core.store import RunStore
    from evoforge.judges.panel import judgements_per_text, questions
    from evoforge.steps.evolution import make_panel
    from evoforge.steps.screening import EmbeddingMemo, training_set
    from models.embedder import load_embedder
    from models.loading import load_backend
    from models.value_model import Context, ValueModel, features

    torch.set_num_threads(args.threads)
    machine = machine_at_start()
    domain = load_domain(args.domain)
    config = RunConfig(domain=args.domain)
    backend = load_backend("smollm2", "auto")
    backends = {"smollm2": backend}
    panel = make_panel(config, domain, backends)
    memo = EmbeddingMemo(load_embedder())
    data = training_set(RunStore(ROOT / "tests" / "data" / "opinions-s0-run"), 8, domain.axis_names, memo)
    model = ValueModel().fit(data.x, data.targets, data.inserted)
    print(f"value model held-out: {model.heldout}", flush=True)

    def values(texts):
        return model.predict(features(texts, memo(texts), Context()))["quality"]

    g = domain.generator
    pool = domain.load_pool()
    rng = np.random.default_rng(0)
    records = []
    for i in range(args.prompts):
        items = [pool[j] for j in rng.choice(len(pool), size=3, replace=False)]
        prompt = few_shot_prompt(g.system_prompts[i % len(g.system_prompts)], g.template, items, g.separator)
        for method in args.methods:
            expander = SentenceExpander(backend, prompt, separator=g.separator, sentence_tokens=args.sentence_tokens,
                                        max_tokens=args.max_tokens, seed=100 + i)
            started = time.perf_counter()
            result = run_method(method, expander, values, args)
            wall = time.perf_counter() - started
            text = trim_to_last_sentence(result.text)
            records.append({"prompt": i, "method": method, "text": text, "score": result.score, "wall_s": wall,
                            "model_calls": result.expand_calls, "valued": result.valued_texts})
            print(f"prompt {i} {method:9s} {wall:6.1f} s  {text[:90]!r}", flush=True)
    rows = pd.DataFrame(records)
    judged = panel.judge(backends, rows["text"].tolist())
    axis = domain.axis_names[0]
    rows["quality"] = judged["quality"].to_numpy()
    rows["measure"] = judged[f"measure_{axis}"].to_numpy()
    rows["extremeness"] = (rows["measure"] - 0.5).abs()
    qd = {}
    for method, r in rows.groupby("method"):
        archive = QDArchive(domain.axis_names, [a.bins for a in domain.axes])
        archive.add(np.arange(len(r)), r["text"].tolist(), r["quality"].to_numpy(), r[["measure"]].to_numpy(), 0)
        qd[method] = archive.stats()["qd_score"]
    rows.attrs["qd"] = qd
    per_text = judgements_per_text(config.judges, questions(domain))
    payload = {"machine": machine, "settings": vars(args), "value_model_heldout": model.heldout,
               "rows": rows.to_dict("records"), "qd": qd, "table": markdown_table(rows, per_text)}
    save_table(args.results, f"strategies-{args.domain}", payload)
    return payload


if __name__ == "__main__":
    main()
