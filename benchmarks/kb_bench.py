"""The knowledge base measured: retrieval quality, ingest throughput, query latency at scale, and `ask` with and
without it.

    .venv/bin/python benchmarks/kb_bench.py [--scales 10000 100000] [--ask-tasks 8] [--faiss PATH] [--threads 1]

1. Retrieval on the labelled set (data/kb/questions.jsonl: 30 questions over the 16 documents of data/kb/docs,
   four of them distractors on the same topics): recall@1, recall@5 and MRR of the document holding the answer.
2. Ingest throughput on real text: chunks/s of MiniLM embedding (sentences of the shipped documents shuffled into
   120-word chunks) and of writing to LanceDB.
3. Scale: random unit vectors stand in for embeddings (MiniLM embeds a few hundred chunks/s on one core, so
   100k real chunks would take most of an hour): write chunks/s, and top-5 query latency (mean, p95) with and
   without a metadata filter, flat (exact) search. With --faiss (a folder where faiss-cpu is installed) the same
   vectors in a FAISS IndexFlatIP, for the store choice.
4. Query embedding latency: a new query (MiniLM) against one in the persisted LRU cache.
5. `ask` with and without the base on --ask-tasks questions of the labelled set: 2 experts, one iteration, the
   tournament's own steps; the kept answer's exact-fact check (the accepted answer as whole words) and the
   groundedness judge's score (P(yes) that the answer is supported by the retrieved passages; both conditions
   judged against the same passages).

Writes benchmarks/results/<date>-<host>-kb.json and prints a Markdown table.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoforge.knowledge.base import DIM, KnowledgeBase  # noqa: E402
from evoforge.knowledge.sources import read_sources  # noqa: E402
from evoforge.knowledge.summarize import sentences  # noqa: E402

DOCS = ROOT / "data" / "kb" / "docs"
QUESTIONS = ROOT / "data" / "kb" / "questions.jsonl"


def labelled() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


def retrieval_quality(kb: KnowledgeBase) -> dict:
    ranks = []
    for q in labelled():
        found = [Path(p.source).name for p in kb.search(q["question"], k=5)]
        ranks.append(found.index(q["doc"]) + 1 if q["doc"] in found else None)
    return {"questions": len(ranks), "recall_at_1": float(np.mean([r == 1 for r in ranks])),
            "recall_at_5": float(np.mean([r is not None for r in ranks])),
            "mrr": float(np.mean([1 / r if r else 0.0 for r in ranks]))}


def synthetic_rows(n: int, rng: np.random.Generator, texts: list[str]) -> tuple[list[dict], np.ndarray]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [dict(id=f"s{i}", kind="document", source=f"synthetic/{i // 50}.txt", source_hash=f"h{i // 50}",
                 part=0, position=(i % 50) * 90, text=texts[i % len(texts)], chunk_hash=f"c{i}",
                 domain=f"d{i % 10}", run="", niche="", reward=np.nan, quality=np.nan, ingested_at="")
            for i in range(n)]
    return rows, vectors


def latency_ms(search, queries: np.ndarray) -> dict:
    search(queries[0])  # warm: the first search opens the files
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q)
        times.append((time.perf_counter() - start) * 1000)
    return {"mean": float(np.mean(times)), "p95": float(np.percentile(times, 95))}


def scale(n: int, folder: Path, texts: list[str], faiss_path: str | None) -> dict:
    rng = np.random.default_rng(n)
    rows, vectors = synthetic_rows(n, rng, texts)
    kb = KnowledgeBase(folder, embed=lambda t: None)
    start = time.perf_counter()
    for i in range(0, n, 5000):  # as ingest writes: a batch per call
        kb.write(rows[i : i + 5000], vectors[i : i + 5000])
    seconds = time.perf_counter() - start
    queries = rng.standard_normal((50, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    out = {"chunks": n, "write_chunks_per_s": n / seconds,
           "query_ms": latency_ms(lambda q: kb.search_vector(q, 5), queries),
           "filtered_query_ms": latency_ms(lambda q: kb.search_vector(q, 5, domain="d3"), queries)}
    hits = kb.search_vector(vectors[7], 1)
    assert hits[0].chunk_hash == "c7", "exact search must find a stored vector first"
    if faiss_path:
        sys.path.insert(0, faiss_path)
        import faiss

        faiss.omp_set_num_threads(1)
        start = time.perf_counter()
        index = faiss.IndexFlatIP(DIM)
        for i in range(0, n, 5000):
            index.add(vectors[i : i + 5000])
        faiss_seconds = time.perf_counter() - start
        out["faiss_flat"] = {"add_vectors_per_s": n / faiss_seconds,
                             "query_ms": latency_ms(lambda q: index.search(q[None], 5), queries),
                             "version": faiss.__version__}
    return out


def ingest_throughput(embedder, folder: Path, chunks: int = 256) -> dict:
    """Real text: the shipped documents' sentences shuffled into 120-word chunks, embedded and written."""
    words = " ".join(s for src in read_sources(DOCS)[0] for p in src.parts for s in sentences(p.text)).split()
    rng = random.Random(0)
    texts = []
    for _ in range(chunks):
        start = rng.randrange(0, len(words) - 120)
        texts.append(" ".join(words[start : start + 120]))
    start, cpu = time.perf_counter(), time.process_time()
    vectors = np.concatenate([embedder.embed(texts[i : i + 64]) for i in range(0, chunks, 64)])
    embed_s, embed_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    rows, _ = synthetic_rows(chunks, np.random.default_rng(0), texts)
    kb = KnowledgeBase(folder, embed=embedder.embed)
    start = time.perf_counter()
    kb.write(rows, vectors)
    write_s = time.perf_counter() - start
    # Per CPU second too: on a shared machine the wall-clock rate says more about the neighbours than about MiniLM.
    return {"chunks": chunks, "embed_chunks_per_s": chunks / embed_s, "embed_chunks_per_cpu_s": chunks / embed_cpu_s,
            "write_chunks_per_s": chunks / write_s,
            "ingest_chunks_per_s": chunks / (embed_s + write_s)}, texts


def query_embedding(kb: KnowledgeBase) -> dict:
    questions = [q["question"] + " (timing)" for q in labelled()[:10]]
    cold, warm = [], []
    for q in questions:
        start = time.perf_counter()
        kb.query_vector(q)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        kb.query_vector(q)
        warm.append(time.perf_counter() - start)
    return {"new_query_ms": 1000 * float(np.mean(cold)), "cached_query_ms": 1000 * float(np.mean(warm))}


def ask_comparison(kb: KnowledgeBase, tasks: int, root: Path) -> dict:
    """Each question answered by 2 experts without and with the base; the same panel (with the groundedness
    question over the retrieved passages) judges both, the consensus selection keeps one per condition."""
    from evoforge.core.config import TournamentConfig
    from evoforge.judges.selection import contains_answer
    from evoforge.steps.tournament import (TournamentState, answer_step, fit_tournament_judges, judge_step,
                                           load_spec, prepare_tournament, retrieve)
    from models.loading import load_backend

    backends = {"smollm2": load_backend("smollm2", "auto")}
    spec = load_spec()
    picked = labelled()[:: max(1, len(labelled()) // tasks)][:tasks]
    rows = []
    for i, q in enumerate(picked):
        task = f"Answer in one short sentence. {q['question']}"
        config = TournamentConfig(instruction=task, experts=2, max_new_tokens=32, continue_tokens=8,
                                  min_iterations=1, max_iterations=1, out=str(root / "runs"), seed=i,
                                  population_file=str(root / f"population-{i}.parquet"))
        experts = prepare_tournament(config, spec).experts
        retrieval = retrieve(kb, task, config.kb_k, config.kb_context_chars)
        with_kb = TournamentState(config, spec, experts, root, retrieval)
        without = TournamentState(config, spec, experts, root, None)
        panel = fit_tournament_judges(with_kb, backends)
        for name, state in (("without", without), ("with", with_kb)):
            judged = judge_step(with_kb, panel, answer_step(state, 0, backends), backends).reset_index(drop=True)
            kept = judged.iloc[with_kb.selector.pick(judged)]
            rows.append({"question": q["question"], "condition": name, "answer": kept["text"],
                         "correct": contains_answer(kept["text"], q["answers"]),
                         "any_correct": any(contains_answer(t, q["answers"]) for t in judged["text"]),
                         "grounded": float(kept["grounded"]), "context_has_answer":
                         contains_answer(retrieval.context, q["answers"])})
            print(f"  {name:>7} kb: {'right' if rows[-1]['correct'] else 'wrong'}  {kept['text'][:90]!r}", flush=True)
    summary = {}
    for name in ("without", "with"):
        mine = [r for r in rows if r["condition"] == name]
        summary[name] = {k: float(np.mean([r[k] for r in mine])) for k in ("correct", "any_correct", "grounded")}
    summary["context_has_answer"] = float(np.mean([r["context_has_answer"] for r in rows[1::2]]))

    return {"tasks": len(picked), "experts": 2, "max_new_tokens": 32, "summary": summary, "rows": rows}


def markdown(p: dict) -> str:
    r, ing, q = p["retrieval"], p["ingest"], p["query_embedding"]
    lines = ["| measure | value |", "|---|---|",
             f"| retrieval, {r['questions']} labelled questions: recall@1 / recall@5 / MRR | "
             f"{r['recall_at_1']:.2f} / {r['recall_at_5']:.2f} / {r['mrr']:.2f} |",
             f"| ingest, real text ({ing['chunks']} chunks of 120 words): MiniLM embedding / LanceDB write / both | "
             f"{ing['embed_chunks_per_s']:.0f} / {ing['write_chunks_per_s']:.0f} / {ing['ingest_chunks_per_s']:.0f} chunks/s |"]
    if "embed_chunks_per_cpu_s" in ing:
        lines.append(f"| MiniLM embedding per CPU second (one thread) | {ing['embed_chunks_per_cpu_s']:.0f} chunks |")
    lines.append(f"| query embedding: new query (MiniLM) / cached (LRU) | {q['new_query_ms']:.1f} / "
                 f"{q['cached_query_ms']:.2f} ms |")
    for s in p["scale"]:
        lines.append(f"| {s['chunks']:,} chunks (random vectors): LanceDB write | {s['write_chunks_per_s']:,.0f} chunks/s |")
        lines.append(f"| {s['chunks']:,} chunks: top-5 query, flat / with a metadata filter (mean, p95) | "
                     f"{s['query_ms']['mean']:.1f} (p95 {s['query_ms']['p95']:.1f}) / "
                     f"{s['filtered_query_ms']['mean']:.1f} (p95 {s['filtered_query_ms']['p95']:.1f}) ms |")
        if "faiss_flat" in s:
            f = s["faiss_flat"]
            lines.append(f"| {s['chunks']:,} chunks: FAISS {f['version']} IndexFlatIP add / top-5 query | "
                         f"{f['add_vectors_per_s']:,.0f} vectors/s / {f['query_ms']['mean']:.2f} ms |")
    if p.get("ask"):
        a = p["ask"]["summary"]
        for name in ("without", "with"):
            lines.append(f"| ask {name} the base ({p['ask']['tasks']} questions): kept answer right / some answer "
                         f"right / groundedness | {a[name]['correct']:.2f} / {a[name]['any_correct']:.2f} / "
                         f"{a[name]['grounded']:.2f} |")
        lines.append(f"| ask: the condensed passages hold the answer | {a['context_has_answer']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--ask-tasks", type=int, default=8, help="questions for ask with and without (0: skip)")
    parser.add_argument("--faiss", help="a folder where faiss-cpu is installed (pip install --target), to compare")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import torch

    from benchmarks.machine import machine_info, save_table
    from models.embedder import load_embedder
    from models.devices import resolve_precision

    torch.set_num_threads(args.threads)
    embedder = load_embedder("minilm")
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as tmp:
        tmp = Path(tmp)
        kb = KnowledgeBase(tmp / "labelled", embed=embedder.embed)
        kb.add(*read_sources(DOCS))
        payload = {"machine": {**machine_info(), "precision": resolve_precision("auto")},
                   "retrieval": retrieval_quality(kb), "query_embedding": query_embedding(kb)}
        print(json.dumps(payload["retrieval"]), flush=True)
        payload["ingest"], texts = ingest_throughput(embedder, tmp / "ingest")
        print(json.dumps(payload["ingest"]), flush=True)
        payload["scale"] = []
        for n in args.scales:
            payload["scale"].append(scale(n, tmp / f"scale-{n}", texts, args.faiss))
            print(json.dumps(payload["scale"][-1]), flush=True)
        payload["ask"] = ask_comparison(kb, args.ask_tasks, tmp) if args.ask_tasks else None
        payload["table"] = markdown(payload)
    save_table(args.results, "kb", payload)
    return payload


if __name__ == "__main__":
    main()
