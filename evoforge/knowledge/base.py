"""The knowledge base: chunks of sources with their MiniLM embeddings in an embedded LanceDB table.

LanceDB (not FAISS) because a base is then one folder with everything in it (Arrow/Parquet-native fragments),
metadata filters are SQL prefilters applied before the top-k, and replacing one source's chunks is a delete by
predicate; with FAISS the ids, the metadata beside it in Parquet, the filters and the deletes would be ours to keep
in step (benchmarks/kb_bench.py measures both: FAISS searches faster, both far below the query's embedding time).
"""

import math
import time
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from evoforge.knowledge import KnowledgeError
from evoforge.knowledge.cache import LRUCache
from evoforge.core.config import CHUNK_WORDS, OVERLAP_WORDS, IngestConfig
from evoforge.knowledge.chunking import chunk_text
from evoforge.knowledge.sources import Source, read_sources

KB_ROOT = Path(".state/kb")
TABLE = "chunks"
EMBEDDER = "minilm"
DIM = 384  # all-MiniLM-L6-v2
EMBED_BATCH = 64  # chunks per call to the embedder (MiniLM batches 32 inside it)
FILTERS = ("kind", "source", "domain", "run", "niche")  # what search can select by; `source` matches a path prefix
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

SCHEMA = pa.schema([
    ("id", pa.string()), ("kind", pa.string()), ("source", pa.string()), ("source_hash", pa.string()),
    ("part", pa.int32()), ("position", pa.int32()), ("text", pa.string()), ("chunk_hash", pa.string()),
    ("domain", pa.string()), ("run", pa.string()), ("niche", pa.string()), ("reward", pa.float64()),
    ("quality", pa.float64()), ("ingested_at", pa.string()), ("vector", pa.list_(pa.float32(), DIM)),
])


def kb_folder(name: str, root: str | Path = KB_ROOT) -> Path:
    """A base's folder: a plain name is `.state/kb/<name>`; anything with a slash (or starting with a dot) is a
    path, so one base can be shared by several checkouts."""
    if "/" in name or name.startswith("."):
        return Path(name)
    if not NAME.match(name):
        raise KnowledgeError(f"knowledge base name {name!r}: use letters, digits, '_', '.', '-' (or give a path)")
    return Path(root) / name


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk, with where it came from and its cosine similarity to the query."""

    text: str
    similarity: float
    kind: str
    source: str
    part: int
    position: int
    chunk_hash: str
    domain: str = ""
    run: str = ""
    niche: str = ""
    reward: float = math.nan
    quality: float = math.nan

    def citation(self) -> str:
        where = f"part {self.part}, " if self.kind != "document" else ""
        return f"{self.source} ({where}word {self.position}, similarity {self.similarity:.2f})"

    def to_record(self) -> dict:
        record = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


@dataclass
class IngestReport:
    added_chunks: int = 0
    added_sources: int = 0
    replaced_sources: int = 0
    unchanged_sources: int = 0
    removed_chunks: int = 0
    seconds_embedding: float = 0.0
    seconds_writing: float = 0.0
    problems: list[str] = field(default_factory=list)  # one line per source left out: its path and the fix


def sql_text(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def where_clause(filters: dict[str, str | None]) -> str | None:
    """The SQL prefilter for the given filters; `source` is a path prefix, the others match exactly."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise KnowledgeError(f"unknown filter {sorted(unknown)}: filter by {', '.join(FILTERS)}")
    terms = []
    for name, value in filters.items():
        if value is None or value == "":
            continue
        if name == "source":
            terms.append(f"starts_with(source, {sql_text(value)})")
        else:
            terms.append(f"{name} = {sql_text(value)}")
    return " AND ".join(terms) or None


class KnowledgeBase:
    """One base in a folder. `embed(texts) -> unit vectors` defaults to MiniLM, loaded on first use."""

    def __init__(self, folder: str | Path, embed: Callable[[list[str]], np.ndarray] | None = None,
                 cache_capacity: int = 4096, chunk_words: int = CHUNK_WORDS, overlap_words: int = OVERLAP_WORDS):
        self.folder = Path(folder)
        self._embed, self._db, self._cache, self.cache_capacity = embed, None, None, cache_capacity
        self.chunk_words, self.overlap_words = chunk_words, overlap_words

    # The folder is made by the first write, not on opening: a mistyped name in a search leaves nothing behind.
    @property
    def db(self):
        if self._db is None:
            import lancedb  # heavy import, only when a base is used

            self.folder.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(str(self.folder))
        return self._db

    @property
    def cache(self) -> LRUCache:
        if self._cache is None:
            self._cache = LRUCache(self.folder / "cache.sqlite", self.cache_capacity)
        return self._cache

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._embed is None:
            from models.embedder import load_embedder

            self._embed = load_embedder(EMBEDDER).embed
        return np.asarray(self._embed(texts), dtype=np.float32)

    def _table(self, create: bool = False):
        if not create and not self.folder.is_dir():
            return None
        if TABLE in self.db.list_tables().tables:
            return self.db.open_table(TABLE)
        return self.db.create_table(TABLE, schema=SCHEMA) if create else None

    def source_hashes(self) -> dict[str, set[str]]:
        """Each ingested source's content hashes (two only while a replacement is being written)."""
        table = self._table()
        if table is None:
            return {}
        frame = table.search().select(["source", "source_hash"]).limit(None).to_arrow().to_pandas()
        return frame.groupby("source")["source_hash"].agg(set).to_dict()

    def add(self, sources: list[Source], problems: list[str] | None = None) -> IngestReport:
        """Ingest sources: a new one is added, a changed one replaced, an unchanged one skipped. New chunks are
        written before the old ones of their source are deleted, so a failure midway loses nothing."""

        report = IngestReport(problems=list(problems or []))
        known = self.source_hashes()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for source in sources:
            digest = source.hash
            if known.get(source.path) == {digest}:
                report.unchanged_sources += 1
                continue
            rows = [dict(id=f"{digest[:16]}-{p}-{chunk.position}", kind=source.kind, source=source.path,
                         source_hash=digest, part=p, position=chunk.position, text=chunk.text,
                         chunk_hash=chunk.hash, domain=part.domain, run=part.run, niche=part.niche,
                         reward=part.reward, quality=part.quality, ingested_at=now)
                    for p, part in enumerate(source.parts)
                    for chunk in chunk_text(part.text, self.chunk_words, self.overlap_words)]
            start = time.perf_counter()
            vectors = np.concatenate([self.embed([r["text"] for r in rows[i : i + EMBED_BATCH]])
                                      for i in range(0, len(rows), EMBED_BATCH)]) if rows else np.zeros((0, DIM))
            report.seconds_embedding += time.perf_counter() - start
            start = time.perf_counter()
            self.write(rows, vectors)
            table = self._table()
            stale = f"source = {sql_text(source.path)} AND source_hash != {sql_text(digest)}"
            old = table.count_rows(stale)
            if old:
                table.delete(stale)
            report.seconds_writing += time.perf_counter() - start
            report.removed_chunks += old
            report.added_chunks += len(rows)
            if source.path in known:
                report.replaced_sources += 1
            else:
                report.added_sources += 1
        return report

    def write(self, rows: list[dict], vectors: np.ndarray) -> None:
        """Append chunk rows with their vectors (also the benchmark's way in for synthetic chunks)."""
        if not rows:
            return
        columns = {name: [r[name] for r in rows] for name in SCHEMA.names if name != "vector"}
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, DIM)
        self._table(create=True).add(pa.table(columns, schema=SCHEMA))

    def query_vector(self, query: str) -> np.ndarray:
        """The query's embedding, from the persisted LRU cache when this query was embedded before."""
        key = LRUCache.key("embedding", EMBEDDER, query)
        vector = self.cache.vector(key)
        if vector is None:
            vector = self.embed([query])[0]
            self.cache.put_vector(key, vector)
        return vector

    def check_not_empty(self) -> None:
        table = self._table()
        if table is None or table.count_rows() == 0:
            raise KnowledgeError(f"knowledge base {self.folder} is empty: add documents first "
                                 f"(evoforge kb add PATH --kb {self.folder})")

    def search(self, query: str, k: int = 5, **filters) -> list[Passage]:
        """The k chunks most similar (cosine) to the query among those the filters select."""
        self.check_not_empty()
        return self.search_vector(self.query_vector(query), k, **filters)

    def search_vector(self, vector: np.ndarray, k: int = 5, **filters) -> list[Passage]:
        if k < 1:
            raise KnowledgeError(f"k must be at least 1, got {k}")
        table = self._table()
        request = table.search(np.asarray(vector, dtype=np.float32)).distance_type("cosine").limit(k)
        where = where_clause(filters)
        if where:
            request = request.where(where, prefilter=True)
        found = request.to_arrow().to_pylist()
        fields = set(Passage.__dataclass_fields__) - {"similarity"}
        return [Passage(similarity=1.0 - float(row["_distance"]), **{f: row[f] for f in fields}) for row in found]

    def stats(self) -> dict:
        table = self._table()
        frame = (table.search().select(["kind", "source", "domain", "run"]).limit(None).to_arrow().to_pandas()
                 if table is not None else None)
        chunks = 0 if frame is None else len(frame)
        return {
            "folder": str(self.folder), "chunks": chunks,
            "sources": 0 if frame is None else int(frame["source"].nunique()),
            "by_kind": {} if frame is None else frame["kind"].value_counts().to_dict(),
            "domains": [] if frame is None else sorted(d for d in frame["domain"].unique() if d),
            "runs": [] if frame is None else sorted(r for r in frame["run"].unique() if r),
            "cache_entries": len(self.cache) if (self.folder / "cache.sqlite").is_file() else 0,
            "bytes_on_disk": sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
            if self.folder.is_dir() else 0,
        }


def open_base(name: str, embed: Callable[[list[str]], np.ndarray] | None = None, **settings) -> KnowledgeBase:
    """The base a name or path names (kb_folder)."""
    return KnowledgeBase(kb_folder(name), embed, **settings)


def ingest(config: IngestConfig, embed: Callable[[list[str]], np.ndarray] | None = None) -> IngestReport:
    """Read everything under config.path and add it (the `ingest` flow's steps in one call, for scripts)."""
    kb = open_base(config.kb, embed, chunk_words=config.chunk_words, overlap_words=config.overlap_words)
    return kb.add(*read_sources(config.path))
