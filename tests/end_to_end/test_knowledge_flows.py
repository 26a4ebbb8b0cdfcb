"""The knowledge base end to end: the ingest flow, `ask --kb` on the real models, and `evoforge chat` driven in
a real pseudo-terminal as a person would type into it."""

import json
import os
import pty
import select
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from evoforge.core.config import IngestConfig, TournamentConfig
from evoforge.knowledge.base import KnowledgeBase

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "data" / "kb" / "docs"


@pytest.fixture(scope="module")
def filled_kb(tmp_path_factory, embedder):
    """A base holding the shipped documents, ingested by the plain functions (the flow is tested below)."""
    from evoforge.knowledge.sources import read_sources

    folder = tmp_path_factory.mktemp("kb") / "docs"
    KnowledgeBase(folder, embed=embedder.embed).add(*read_sources(DOCS))
    return folder


@pytest.mark.slow
def test_ingest_flow_adds_then_skips_and_reports_bad_files(prefect_server, tmp_path):
    from flows.ingest import ingest

    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4 broken")
    config = IngestConfig(path=str(docs), kb=str(tmp_path / "kb"))
    first = ingest(config)
    assert first["added_sources"] == 16 and first["stats"]["chunks"] == first["added_chunks"]
    assert len(first["problems"]) == 1 and "scan.pdf: not a readable PDF" in first["problems"][0]
    again = ingest(config)
    assert (again["added_chunks"], again["unchanged_sources"]) == (0, 16)


def tiny(tmp_path, **overrides) -> TournamentConfig:
    values = dict(instruction="Who built the Quillon Point lighthouse?", experts=2, max_new_tokens=24,
                  continue_tokens=4, min_iterations=1, max_iterations=1, reward_threshold=100.0,
                  out=str(tmp_path / "runs"), population_file=str(tmp_path / "population.parquet"))
    return TournamentConfig(**{**values, **overrides})


@pytest.mark.slow
def test_ask_with_a_knowledge_base_cites_its_sources(prefect_server, backend, filled_kb, tmp_path):
    from evoforge.steps.tournament import summary_markdown
    from flows.tournament import moe_tournament

    summary = moe_tournament(tiny(tmp_path, kb=str(filled_kb), kb_k=3, kb_context_chars=400))
    assert [Path(s["source"]).name for s in summary["sources"]][0] == "quillon-lighthouse.md"
    answers = pd.read_parquet(summary["answers_path"])
    assert answers["grounded"].between(0, 1).all()  # the groundedness question joined the panel
    assert "grounded" in summary["scores"]
    best = Path(summary["run_dir"], "best_answer.md").read_text()
    assert "# Sources" in best and "[1] " + summary["sources"][0]["source"] in best
    assert "# Sources" in summary_markdown({**summary, "mlflow_run_id": "x"})  # the Prefect artifact
    record = json.loads(Path(summary["run_dir"], "records.jsonl").read_text())
    assert record["query"] == summary["task"] and record["answer"] == summary["answer"]
    assert "Mara Velde" in record["context"] and len(record["context"]) <= 400 + 10
    assert record["sources"] == summary["sources"]


def test_ask_refuses_an_empty_knowledge_base_before_anything_starts(tmp_path, capsys):
    from app.cli import main

    assert main(["ask", "Who built it?", "--kb", str(tmp_path / "empty"), "--out", str(tmp_path / "runs")]) == 2
    assert "is empty: add documents first (evoforge kb add PATH --kb" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


class Terminal:
    """A program in a pseudo-terminal: what a person sees, and keys typed into it."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the program, with the pty as its terminal
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        self.screen = b""
        self.read_to = 0

    def expect(self, text: str, timeout: float) -> str:
        """Wait until `text` appears after what was already read; returns the new output."""
        end = time.time() + timeout
        while time.time() < end:
            found = self.screen.find(text.encode(), self.read_to)
            if found >= 0:
                new = self.screen[self.read_to : found + len(text)].decode(errors="replace")
                self.read_to = found + len(text)
                return new
            if select.select([self.fd], [], [], 0.5)[0]:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the program exited
                    chunk = b""
                if not chunk:
                    break
                self.screen += chunk
        raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.screen.decode(errors='replace')}")

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def exit_status(self, timeout: float = 120) -> int:
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.5)[0]:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:
                    pass
        os.kill(self.pid, 9)
        raise AssertionError("the chat did not exit")


@pytest.mark.slow
def test_chat_in_a_terminal_keeps_history_learns_a_typed_reward_and_saves_on_ctrl_d(filled_kb, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}
    argv = [sys.executable, "-m", "app.cli", "chat", "--kb", str(filled_kb), "--experts", "2", "--max-new-tokens",
            "16", "--out", str(tmp_path / "runs"), "--population-file", str(tmp_path / "population.parquet")]
    chat = Terminal(argv, tmp_path, env)
    chat.expect("you> ", timeout=600)  # the models load first
    chat.type("Who built the Quillon Point lighthouse?\n")
    answer = chat.expect("you> ", timeout=600)
    assert "expert " in answer and "sources:" in answer and "quillon-lighthouse.md" in answer
    chat.type("/reward 0.8\n")
    assert "value now +" in chat.expect("you> ", timeout=60)
    chat.type("/reward lots\n")
    assert "usage: /reward R" in chat.expect("you> ", timeout=60)
    chat.type("And how tall is it?\n")
    chat.expect("you> ", timeout=600)
    chat.type("\x04")  # Ctrl-D
    assert chat.exit_status() == 0
    chat.expect("saved 2 turns", timeout=5)
    (run,) = (tmp_path / "runs").iterdir()
    turns = pd.read_parquet(run / "turns.parquet")
    assert turns["message"].tolist() == ["Who built the Quillon Point lighthouse?", "And how tall is it?"]
    assert turns["reward"].iloc[0] == 0.8 and pd.isna(turns["reward"].iloc[1])
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in records] == [0.8, None] and records[0]["sources"][0]["n"] == 1
    population = pd.read_parquet(tmp_path / "population.parquet")
    rated = int(turns["expert_id"].iloc[0])
    assert population.loc[population["expert_id"] == rated, "value"].iloc[0] > 0  # the typed reward was learnt


def test_chat_prompt_keeps_the_last_turns(tmp_path):
    """History kept: each message goes to the experts after the last HISTORY_TURNS turns."""
    from evoforge.steps.chat import HISTORY_TURNS, ChatSession

    session = ChatSession(tiny(tmp_path, instruction="chat"), backends={})
    session.turns.append({"message": "My name is Ilse.", "answer": "Hello Ilse."})
    assert session.conversation("What is my name?") == \
        "User: My name is Ilse.\nAssistant: Hello Ilse.\nUser: What is my name?"
    session.turns += [{"message": f"m{i}", "answer": f"a{i}"} for i in range(HISTORY_TURNS)]
    assert "Ilse" not in session.conversation("Again?")  # older turns fall out of the small model's context


@pytest.mark.slow
def test_a_run_adds_its_elites_to_a_knowledge_base(prefect_server, backend, embedder, tmp_path):
    """The nightly path: a run with knowledge_base set ingests its archive after the last generation."""
    from evoforge.core.config import RunConfig
    from flows.evolution import evolution_run

    kb = tmp_path / "kb"
    summary = evolution_run(RunConfig(generations=1, experts=2, batch_size=4, max_new_tokens=16, continue_tokens=8,
                                      seed=3, out=str(tmp_path / "runs"), run_name="nightly-kb", knowledge_base=str(kb)))
    elites = pd.read_parquet(tmp_path / "runs" / "nightly-kb" / "archive.parquet")
    assert summary["knowledge_base"]["added_sources"] == 1 and summary["knowledge_base"]["added_chunks"] >= len(elites)
    found = KnowledgeBase(kb, embed=embedder.embed).search("vegetables", k=1, kind="elite", run="nightly-kb")
    assert found[0].domain == "opinions" and found[0].niche.startswith("sentiment=")
    assert found[0].text.split()[:5] == elites.loc[elites["text"].str.startswith(found[0].text[:20]), "text"].iloc[0].split()[:5]
