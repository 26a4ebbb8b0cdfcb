"""Query / retrieved sources / answer / reward records, one JSON object a line: what `ask --kb` and `chat` write
(`records.jsonl` in their run folders) and `evoforge kb export` gathers into one file for fine-tuning."""

import json
import math
from pathlib import Path

from evoforge.core.store import atomic_write
from evoforge.knowledge.base import Passage

RECORDS_FILE = "records.jsonl"


def source_list(passages: list[Passage]) -> list[dict]:
    """The numbered sources as cited in answers ([n])."""
    return [{"n": n, "source": p.source, "kind": p.kind, "part": p.part, "position": p.position,
             "similarity": round(p.similarity, 4), "citation": p.citation()} for n, p in enumerate(passages, 1)]


def sources_markdown(sources: list[dict]) -> str:
    """The Sources list under an answer (best_answer.md, the Prefect artifact, the chat)."""
    return "\n".join(f"[{s['n']}] {s['citation']}  " for s in sources)


def record(query: str, sources: list[dict], answer: str, reward: float | None, origin: str, run: str,
           context: str = "") -> dict:
    """One record; `sources` as source_list gives them, `context` the condensed passages the answer was written
    from."""
    reward = None if reward is None or (isinstance(reward, float) and math.isnan(reward)) else float(reward)
    return {"query": query, "context": context, "sources": sources, "answer": answer,
            "reward": reward, "origin": origin, "run": run}


def write_records(records: list[dict], path: str | Path) -> Path:
    """Written atomically: a process killed while writing leaves the previous file whole (a reader of a truncated
    last line would fail), and the temporary's name is not `RECORDS_FILE`, so `collect_records` never reads it."""
    def write(tmp: Path):
        with tmp.open("w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")

    return atomic_write(Path(path), write)


def collect_records(runs: str | Path, rated_only: bool = False) -> list[dict]:
    """Every record under a runs folder (ask and chat runs), oldest run first."""
    found = []
    for path in sorted(Path(runs).rglob(RECORDS_FILE)):
        with path.open(encoding="utf-8") as fh:
            found += [json.loads(line) for line in fh if line.strip()]
    return [r for r in found if r.get("reward") is not None] if rated_only else found
