"""A least-recently-used cache that persists: query embeddings and summaries survive a restart.

SQLite, one file per knowledge base: each entry has a use counter; a hit moves it to the front; past `capacity`
the least recently used entries go. SQLite rather than a pickled dict because several processes (the CLI, a flow
run, a chat) may use one base at once, and a crash mid-write must not lose the cache.
"""

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np


class LRUCache:
    def __init__(self, path: str | Path, capacity: int = 4096):
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.path, self.capacity = Path(path), capacity
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB, used INTEGER)")
        self.hits = self.misses = 0

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

    def get(self, key: str) -> bytes | None:
        with closing(self._connect()) as db, db:
            row = db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
            if row is not None:
                db.execute("UPDATE entries SET used = (SELECT COALESCE(MAX(used), 0) + 1 FROM entries) WHERE key = ?",
                           (key,))
        self.hits += row is not None
        self.misses += row is None
        return None if row is None else row[0]

    def put(self, key: str, value: bytes) -> None:
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, (SELECT COALESCE(MAX(used), 0) + 1 FROM entries))",
                       (key, value))
            db.execute("DELETE FROM entries WHERE key NOT IN (SELECT key FROM entries ORDER BY used DESC LIMIT ?)",
                       (self.capacity,))

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def __contains__(self, key: str) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone() is not None

    def vector(self, key: str) -> np.ndarray | None:
        raw = self.get(key)
        return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()

    def put_vector(self, key: str, vector: np.ndarray) -> None:
        self.put(key, np.asarray(vector, dtype=np.float32).tobytes())

    def text(self, key: str) -> str | None:
        raw = self.get(key)
        return None if raw is None else raw.decode("utf-8")

    def put_text(self, key: str, text: str) -> None:
        self.put(key, text.encode("utf-8"))
