"""What can be ingested, read into `Source`s: one per file, one per run's archive, one per ask run's answers.

A source is the unit of replacement: re-ingesting one whose content hash changed replaces all its chunks, and an
unchanged one is skipped. A file that cannot be read is reported with its path and the fix, and the others are
still read (`read_sources` returns both).
"""

import json
import math
import os
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from evoforge.knowledge import KnowledgeError
from evoforge.knowledge.chunking import content_hash

DOCUMENT_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf")
ELITES_FILE = "archive.parquet"  # an evolution run's final archive
ANSWERS_FILE = "answers.parquet"  # an ask run's answers with their rewards


@dataclass(frozen=True)
class Part:
    """One text of a source (a document's whole text, one elite, one answer) and what filters can select it by."""

    text: str
    domain: str = ""
    run: str = ""
    niche: str = ""
    reward: float = math.nan  # an ask answer's reward
    quality: float = math.nan  # an elite's quality


@dataclass(frozen=True)
class Source:
    path: str  # the file the parts came from
    kind: str  # "document", "elite" or "answer"
    parts: list[Part] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return content_hash(json.dumps([[p.text, p.domain, p.run, p.niche, repr(p.reward), repr(p.quality)]
                                        for p in self.parts]))


class _TextOfHtml(HTMLParser):
    """The visible text of an HTML page: script and style contents are dropped, block ends become line breaks."""

    SKIP = {"script", "style", "head", "noscript"}

    def __init__(self):
        super().__init__()
        self.out, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        self.skipping += tag in self.SKIP

    def handle_endtag(self, tag):
        self.skipping -= tag in self.SKIP and self.skipping > 0
        if tag in {"p", "div", "li", "h1", "h2", "h3", "h4", "br", "tr", "section", "article"}:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.out.append(data)


def html_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    return "".join(parser.out)


def pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:  # a slimmer install: say what to add
        raise KnowledgeError(f"{path}: PDF not supported: install pypdf (pip install pypdf==7.1.1)") from None
    try:
        reader = PdfReader(str(path))
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as err:  # pypdf raises many kinds for a damaged file
        raise KnowledgeError(f"{path}: not a readable PDF ({type(err).__name__}: {err}); re-export it or remove it")
    if not text.strip():
        raise KnowledgeError(f"{path}: the PDF has no text layer (a scan?): run OCR on it (e.g. ocrmypdf) or save "
                             "its text as .txt, then add it again")
    return text


def read_document(path: Path) -> Source:
    """A .txt / .md / .html / .pdf file as one source; a file that cannot be read raises KnowledgeError."""
    suffix = path.suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        raise KnowledgeError(f"{path}: unsupported file type {suffix or '(none)'}: the knowledge base reads "
                             f"{', '.join(DOCUMENT_SUFFIXES)}; convert it to one of these")
    if suffix == ".pdf":
        text = pdf_text(path)
    else:
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise KnowledgeError(f"{path}: not UTF-8 text: convert it to UTF-8 (e.g. iconv -t utf-8) and add it "
                                 "again") from None
        except OSError as err:
            raise KnowledgeError(f"{path}: cannot be read ({err.strerror}): check its permissions") from None
        text = html_text(raw) if suffix in (".html", ".htm") else raw
    if not text.strip():
        raise KnowledgeError(f"{path}: the file has no text: write something into it or remove it")
    return Source(str(path), "document", [Part(" ".join(text.split()))])


def run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_elites(run_dir: Path) -> Source:
    """A run's final archive: one part per elite, its niche as `axis=bin` (e.g. `sentiment=3`)."""
    path = run_dir / ELITES_FILE
    frame = pd.read_parquet(path)
    domain = run_config(run_dir).get("domain", "")
    bins = [c for c in frame.columns if c.startswith("bin_")]
    parts = [Part(str(row["text"]), domain, run_dir.name,
                  ",".join(f"{c[4:]}={int(row[c])}" for c in bins), quality=float(row["quality"]))
             for row in frame.to_dict("records") if str(row["text"]).strip()]
    return Source(str(path), "elite", parts)


def read_answers(run_dir: Path) -> Source:
    """An ask run's rated answers (the selected and the kept ones carry a reward), each with its question."""
    path = run_dir / ANSWERS_FILE
    frame = pd.read_parquet(path)
    fallback = run_config(run_dir).get("instruction", "")
    rated = frame[frame["reward"].notna()] if "reward" in frame else frame.iloc[:0]
    parts = [Part(f"Question: {row.get('task') or fallback}\nAnswer: {row['text']}", run=run_dir.name,
                  reward=float(row["reward"]))
             for row in rated.to_dict("records") if str(row["text"]).strip()]
    return Source(str(path), "answer", parts)


def read_run(run_dir: Path) -> list[Source]:
    return ([read_elites(run_dir)] if (run_dir / ELITES_FILE).is_file() else []) + \
           ([read_answers(run_dir)] if (run_dir / ANSWERS_FILE).is_file() else [])


def is_run(folder: Path) -> bool:
    return (folder / ELITES_FILE).is_file() or (folder / ANSWERS_FILE).is_file()


def read_sources(path: str | Path) -> tuple[list[Source], list[str]]:
    """Every source under `path` (a document, a run folder, or a folder holding documents and runs), and one
    problem line (path: what is wrong and the fix) per file that could not be read. Raises KnowledgeError when
    the path does not exist or holds nothing to ingest."""
    path = Path(path).absolute()  # one file is one source whichever folder it was added from
    if not path.exists():
        raise KnowledgeError(f"{path} does not exist: give a document ({', '.join(DOCUMENT_SUFFIXES)}), a folder of "
                             "them, a run folder (with archive.parquet) or an ask run folder (with answers.parquet)")
    sources, problems = [], []

    def read(reader, target: Path):
        try:
            found = reader(target)
        except KnowledgeError as err:
            problems.append(str(err))
            return
        except (OSError, ValueError) as err:  # a damaged Parquet file or config.json
            problems.append(f"{target}: cannot be read ({err}); regenerate it or remove it")
            return
        sources.extend(found if isinstance(found, list) else [found])

    if path.is_file():
        read(read_document, path)
    elif is_run(path):
        read(read_run, path)
    else:
        for folder, subfolders, files in os.walk(path):
            folder = Path(folder)
            if is_run(folder):  # a run's other files (plots, candidates) are not knowledge
                read(read_run, folder)
                subfolders.clear()
                continue
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(files):
                if Path(name).suffix.lower() in DOCUMENT_SUFFIXES:
                    read(read_document, folder / name)
    if not sources and not problems:
        raise KnowledgeError(f"{path}: nothing to ingest: add {', '.join(DOCUMENT_SUFFIXES)} files to it, or give "
                             "a run folder (archive.parquet) or an ask run folder (answers.parquet)")
    empty = [s.path for s in sources if not s.parts]
    problems += [f"{p}: holds no texts (an empty archive or no rated answers): nothing to add" for p in empty]
    return [s for s in sources if s.parts], problems
