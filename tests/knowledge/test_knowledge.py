"""The knowledge base: chunking, sources, the persisted LRU cache, ingest and retrieval on the real MiniLM.

Model-free tests first; the ones that embed with MiniLM are marked slow (a few seconds each on one core).
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evoforge.knowledge import KnowledgeError
from evoforge.knowledge.base import KnowledgeBase, kb_folder, where_clause
from evoforge.knowledge.cache import LRUCache
from evoforge.knowledge.chunking import chunk_text
from evoforge.knowledge.records import collect_records, record, write_records
from evoforge.knowledge.sources import html_text, read_sources
from evoforge.knowledge.summarize import condense, sentences

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "data" / "kb" / "docs"
QUESTIONS = ROOT / "data" / "kb" / "questions.jsonl"


def text_pdf(path: Path, text: str | None) -> Path:
    """A one-page PDF written by hand (no PDF writer is installed): with a text line, or with none (as a scan)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


# --- chunking -----------------------------------------------------------------------------------------------

def test_chunks_overlap_and_cover_the_text():
    words = [f"w{i}" for i in range(250)]
    chunks = chunk_text(" ".join(words), words=100, overlap=20)
    assert [c.position for c in chunks] == [0, 80, 160]
    assert chunks[0].text.split()[-20:] == chunks[1].text.split()[:20]  # the overlap
    assert chunks[-1].text.split()[-1] == "w249"  # nothing lost at the end
    covered = {w for c in chunks for w in c.text.split()}
    assert covered == set(words)
    assert len({c.hash for c in chunks}) == 3


def test_short_text_is_one_chunk_and_hashes_follow_content():
    assert [c.position for c in chunk_text("a  short\n text")] == [0]
    assert chunk_text("a short text")[0].hash == chunk_text("a\tshort  text")[0].hash  # whitespace normalised
    assert chunk_text("a short text")[0].hash != chunk_text("a short test")[0].hash
    assert chunk_text("   ") == []
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("x", words=10, overlap=10)


# --- sources ------------------------------------------------------------------------------------------------

def test_html_keeps_visible_text_only():
    text = html_text((DOCS / "ferra-robot.html").read_text())
    assert "85 kilograms" in text and "tracking" not in text and "font-family" not in text


def test_reads_documents_pdfs_and_runs(tmp_path):
    shutil.copytree(DOCS, tmp_path / "docs")
    text_pdf(tmp_path / "docs" / "memo.pdf", "The Quorn tunnel is 7 kilometres long.")
    run = tmp_path / "runs" / "opinions-s0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"domain": "opinions"}))
    pd.DataFrame({"cid": [1, 2], "text": ["Greens are great.", "Beets are bad."], "quality": [0.9, 0.7],
                  "generation": [1, 2], "cell": [15, 3], "measure_sentiment": [0.8, 0.2],
                  "bin_sentiment": [15, 3]}).to_parquet(run / "archive.parquet")
    (run / "plots").mkdir()
    (run / "plots" / "notes.txt").write_text("not knowledge: inside a run folder")
    ask = tmp_path / "runs" / "ask-1"
    ask.mkdir()
    pd.DataFrame({"text": ["Invest in AI.", "No idea."], "reward": [0.7, np.nan],
                  "task": ["Should we invest?"] * 2}).to_parquet(ask / "answers.parquet")
    sources, problems = read_sources(tmp_path)
    assert problems == []
    by_kind = {k: [s for s in sources if s.kind == k] for k in ("document", "elite", "answer")}
    assert len(by_kind["document"]) == 17  # 16 shipped documents and the PDF
    pdf = next(s for s in sources if s.path.endswith("memo.pdf"))
    assert "Quorn tunnel is 7 kilometres" in pdf.parts[0].text
    elites = by_kind["elite"][0].parts
    assert [(p.domain, p.run, p.niche, p.quality) for p in elites] == [
        ("opinions", "opinions-s0", "sentiment=15", 0.9), ("opinions", "opinions-s0", "sentiment=3", 0.7)]
    answers = by_kind["answer"][0].parts
    assert len(answers) == 1 and answers[0].reward == 0.7  # only rated answers are knowledge
    assert answers[0].text == "Question: Should we invest?\nAnswer: Invest in AI."


def test_bad_inputs_are_named_with_their_fix(tmp_path):
    with pytest.raises(KnowledgeError, match=f"{tmp_path / 'missing'} does not exist"):
        read_sources(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KnowledgeError, match="nothing to ingest: add .txt"):
        read_sources(tmp_path / "empty")
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.txt").write_text("A good document about the Ostra river.")
    (folder / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (folder / "blank.md").write_text("  \n")
    text_pdf(folder / "scan.pdf", None)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    sources, problems = read_sources(folder)
    assert [Path(s.path).name for s in sources] == ["good.txt"]  # the good file is still read
    joined = "\n".join(problems)
    assert f"{folder / 'latin1.txt'}: not UTF-8 text: convert it to UTF-8" in joined
    assert f"{folder / 'blank.md'}: the file has no text" in joined
    assert f"{folder / 'scan.pdf'}: the PDF has no text layer (a scan?): run OCR" in joined
    assert f"{folder / 'broken.pdf'}: not a readable PDF" in joined
    if os.geteuid() != 0:  # root reads anything
        locked = folder / "locked.txt"
        locked.write_text("secret")
        locked.chmod(0)
        assert any("cannot be read" in p and "permissions" in p for p in read_sources(folder)[1])


def test_kb_names_and_filters():
    assert kb_folder("notes") == Path(".state/kb/notes")
    assert kb_folder("/shared/kb/team") == Path("/shared/kb/team")
    with pytest.raises(KnowledgeError, match="knowledge base name"):
        kb_folder("bad name!")
    assert where_clause({"domain": "opinions", "run": None, "source": "data/it's"}) == \
        "domain = 'opinions' AND starts_with(source, 'data/it''s')"
    with pytest.raises(KnowledgeError, match="filter by kind, source, domain, run, niche"):
        where_clause({"colour": "red"})


# --- the persisted LRU cache ---------------------------------------------------------------------------------

def test_lru_cache_evicts_least_recently_used_and_survives_a_restart(tmp_path):
    cache = LRUCache(tmp_path / "cache.sqlite", capacity=3)
    for name in "abc":
        cache.put_text(name, name.upper())
    assert cache.text("a") == "A"  # a is now the most recently used
    cache.put_text("d", "D")  # evicts b, the least recently used
    assert "b" not in cache and len(cache) == 3
    cache.put_vector("v", np.array([0.25, -1.0], dtype=np.float32))
    cache.close()
    reopened = LRUCache(tmp_path / "cache.sqlite", capacity=3)  # a new process would open it the same way
    assert "c" not in reopened and reopened.text("a") == "A" and reopened.text("d") == "D"
    np.testing.assert_array_equal(reopened.vector("v"), [0.25, -1.0])
    assert reopened.text("nothing") is None and reopened.hits == 3 and reopened.misses == 1
    reopened.close()
    # And in another process, as after a restart of the program:
    script = (f"from evoforge.knowledge.cache import LRUCache; c = LRUCache({str(tmp_path / 'cache.sqlite')!r}, 3); "
              "print(c.text('a'), c.text('d'), 'b' in c)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["A", "D", "False"]


# --- records --------------------------------------------------------------------------------------------------

def test_records_round_trip(tmp_path):
    rows = [record("q1", [], "a1", 0.8, "ask", "ask-1"), record("q2", [], "a2", float("nan"), "chat", "chat-1")]
    write_records(rows, tmp_path / "runs" / "ask-1" / "records.jsonl")
    assert [r["reward"] for r in collect_records(tmp_path / "runs")] == [0.8, None]
    assert [r["query"] for r in collect_records(tmp_path / "runs", rated_only=True)] == ["q1"]


# In a child process: rewrite records.jsonl with 3 records, killed (SIGKILL: no cleanup) after the 2nd is written.
KILLED_WHILE_WRITING = """
import os, signal, sys
import evoforge.knowledge.records as records

real_dumps, written = records.json.dumps, []

def dumps_then_killed(obj, **kwargs):
    written.append(obj)
    if len(written) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_dumps(obj, **kwargs)

records.json = type("json", (), {"dumps": staticmethod(dumps_then_killed)})
records.write_records([records.record(f"new{i}", [], "a", 0.5, "chat", "c") for i in range(3)], sys.argv[1])
"""


def test_a_kill_while_writing_records_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "runs" / "chat-1" / "records.jsonl"
    write_records([record("old", [], "a", 0.9, "chat", "chat-1")], path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(path)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [r["query"] for r in collect_records(tmp_path / "runs")] == ["old"]  # not two new lines of three
    assert (path.parent / ".records.jsonl.tmp").is_file()  # the killed write's part, beside it and never read


def test_sentences_split_at_ends_only():
    assert sentences("It is 4.5 m long. Built in 1902! Why? yes") == ["It is 4.5 m long.", "Built in 1902!", "Why? yes"]


# --- with MiniLM -------------------------------------------------------------------------------------------

@pytest.fixture
def kb(tmp_path, embedder):
    return KnowledgeBase(tmp_path / "kb", embed=embedder.embed)


def labelled() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_retrieval_on_the_labelled_set(kb):
    report = kb.add(*read_sources(DOCS))
    assert report.added_sources == 16 and report.problems == []
    ranks = []
    for q in labelled():
        found = [Path(p.source).name for p in kb.search(q["question"], k=5)]
        ranks.append(found.index(q["doc"]) + 1 if q["doc"] in found else math.inf)
    recall = np.mean([r <= 5 for r in ranks])
    mrr = np.mean([1 / r for r in ranks])
    assert recall >= 0.9 and mrr >= 0.8, (recall, mrr)  # measured 1.0 and 0.98 (benchmarks/kb_bench.py)


@pytest.mark.slow
def test_reingest_skips_unchanged_and_replaces_changed(kb, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    first = kb.add(*read_sources(docs))
    chunks = kb.stats()["chunks"]
    again = kb.add(*read_sources(docs))
    assert (again.added_chunks, again.unchanged_sources) == (0, 16) and kb.stats()["chunks"] == chunks
    river = docs / "ostra-river.md"
    river.write_text(river.read_text().replace("312 kilometres", "298 kilometres") + " " + "More words. " * 150)
    changed = kb.add(*read_sources(docs))
    assert (changed.replaced_sources, changed.unchanged_sources) == (1, 15)
    assert changed.removed_chunks == 1 and changed.added_chunks >= 2  # longer now: several overlapping chunks
    texts = [p.text for p in kb.search("How long is the Ostra river?", k=40, source=str(river))]
    assert any("298 kilometres" in t for t in texts) and not any("312 kilometres" in t for t in texts)
    assert kb.stats()["chunks"] == chunks - 1 + changed.added_chunks
    assert first.added_sources == 16


@pytest.mark.slow
def test_filters_select_before_top_k(kb, tmp_path):
    kb.add(*read_sources(DOCS))
    run = tmp_path / "opinions-s0"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"domain": "opinions"}))
    pd.DataFrame({"cid": [1], "text": ["Eating beets every day made me feel great."], "quality": [0.9],
                  "generation": [1], "cell": [15], "bin_sentiment": [15]}).to_parquet(run / "archive.parquet")
    kb.add(*read_sources(run))
    found = kb.search("lighthouse on the cape", k=3, domain="opinions")
    assert [p.kind for p in found] == ["elite"] and found[0].niche == "sentiment=15"
    assert kb.search("vegetables", k=1, kind="document")[0].kind == "document"
    assert {p.source for p in kb.search("river", k=5, source=str(DOCS / "ostra"))} == {str(DOCS / "ostra-river.md")}


@pytest.mark.slow
def test_query_embeddings_are_cached_across_restarts(tmp_path, embedder):
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return embedder.embed(texts)

    kb = KnowledgeBase(tmp_path / "kb", embed=counting)
    kb.add(*read_sources(DOCS / "maldor-tea.md"))
    first = kb.search("Which tea is picked in April?", k=1)
    reopened = KnowledgeBase(tmp_path / "kb", embed=counting)
    calls.clear()
    again = reopened.search("Which tea is picked in April?", k=1)
    assert calls == [] and [(p.chunk_hash, p.similarity) for p in again] == [(p.chunk_hash, p.similarity) for p in first]  # the query's embedding came from the persisted cache
    summary = condense(reopened, "Which tea is picked in April?", again, budget_chars=220)
    assert summary.startswith("[1] ") and "April" in summary and len(summary) <= 230
    assert "wood-fired" not in summary  # the least similar sentences are left out
    calls.clear()
    assert condense(KnowledgeBase(tmp_path / "kb", embed=counting), "Which tea is picked in April?", again,
                    budget_chars=220) == summary and calls == []


@pytest.mark.slow
def test_empty_base_and_a_failed_source_lose_nothing(kb, tmp_path):
    with pytest.raises(KnowledgeError, match=f"knowledge base {kb.folder} is empty: add documents first"):
        kb.search("anything")
    kb.add(*read_sources(DOCS / "comet-dralis.txt"))
    before = kb.stats()["chunks"]
    (tmp_path / "bad.pdf").write_bytes(b"not a pdf")
    sources, problems = read_sources(tmp_path / "bad.pdf")
    assert sources == [] and "bad.pdf: not a readable PDF" in problems[0]
    report = kb.add(sources, problems)
    assert report.problems == problems and kb.stats()["chunks"] == before


@pytest.mark.slow
def test_a_failure_while_replacing_keeps_the_old_chunks(tmp_path, embedder):
    """Injected fault: the embedder fails while a changed source is being replaced."""
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCS / "comet-dralis.txt", docs)
    healthy = KnowledgeBase(tmp_path / "kb", embed=embedder.embed)
    healthy.add(*read_sources(docs))

    def failing(texts):
        raise RuntimeError("injected fault: embedder down")

    (docs / "comet-dralis.txt").write_text("Comet Dralis returns every 42 years.")
    with pytest.raises(RuntimeError, match="injected fault"):
        KnowledgeBase(tmp_path / "kb", embed=failing).add(*read_sources(docs))
    found = healthy.search("How often does Comet Dralis return?", k=5)
    assert len(found) == 1 and "every 41 years" in found[0].text


# --- the CLI (no model, no server) ------------------------------------------------------------------------------

def test_cli_exports_records_and_refuses_bad_input(tmp_path, capsys):
    from app.cli import main

    write_records([record("q1", [], "a1", 0.8, "ask", "ask-1")], tmp_path / "runs" / "ask-1" / "records.jsonl")
    write_records([record("q2", [], "a2", None, "chat", "chat-1")], tmp_path / "runs" / "chat-1" / "records.jsonl")
    out = tmp_path / "export.jsonl"
    assert main(["kb", "export", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "exported 2 records (1 rated)" in capsys.readouterr().out
    assert [json.loads(line)["query"] for line in out.read_text().splitlines()] == ["q1", "q2"]
    assert main(["kb", "export", "--runs", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "--runs" in capsys.readouterr().err
    assert main(["kb", "search", "anything", "--kb", str(tmp_path / "kb")]) == 2
    assert f"knowledge base {tmp_path / 'kb'} is empty" in capsys.readouterr().err
    assert not (tmp_path / "kb").exists()  # a search leaves no folder behind
    assert main(["kb", "stats", "--kb", str(tmp_path / "kb")]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == 0
    assert main(["kb", "add", str(tmp_path / "missing"), "--kb", str(tmp_path / "kb")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert main(["kb", "add", str(tmp_path), "--kb", str(tmp_path / "kb"), "--overlap-words", "500"]) == 2
    assert "invalid settings: --overlap-words" in capsys.readouterr().err


@pytest.mark.slow
def test_a_knowledge_base_seeds_the_pool_of_an_evolution_run(tmp_path, embedder):
    """Retrieval for evolution: the passages nearest each niche join the seed pool LMX draws examples from."""
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain
    from evoforge.knowledge.examples import EXAMPLE_WORDS, niche_examples, niche_query
    from evoforge.steps.evolution import prepare_run

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "love.txt").write_text("I adore fresh spinach and roasted carrots; every green meal makes me happy. " * 3)
    (docs / "hate.txt").write_text("Boiled broccoli is disgusting and I refuse to eat soggy vegetables ever again.")
    (docs / "bridge.txt").write_text("Corrin Bridge has a main span of 1,120 metres and opened in 1998.")
    kb = KnowledgeBase(tmp_path / "kb", embed=embedder.embed)
    kb.add(*read_sources(docs))
    opinions = load_domain("opinions")
    assert "sentiment is" in niche_query(opinions, [0])
    examples = niche_examples(kb, opinions, per_niche=2)
    assert len(examples) == len(set(examples)) and all(len(e.split()) <= EXAMPLE_WORDS for e in examples)
    assert not any("Corrin" in e for e in examples)  # a passage off the domain is nearest to no niche
    assert any("broccoli" in e for e in examples) and any("spinach" in e for e in examples)
    state = prepare_run(RunConfig(domain="opinions", out=str(tmp_path / "runs"), run_name="seeded",
                                  seed_kb=str(tmp_path / "kb"), seed_kb_per_niche=2))
    assert state.pool[-len(examples):] == examples and len(state.pool) == len(opinions.load_pool()) + len(examples)
