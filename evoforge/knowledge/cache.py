"""A least-recently-used cache that persists: query embeddings and summaries survive a restart.

SQLite, one file per knowledge base: each entry has a use counter; a hit moves it to the front; past `capacity`
the least recently used entries go. SQLite rather than a pickled dict because several processes (the CLI, a flow
run, a chat) may use one base at once, and a crash mid-write must not lose the cache.
"""

import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np


class LRUCache:
    def __init__(self, path: str | Path, capacity: int = 4096):
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.path, self.capacity = Path(path), capacity
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per cache, kept open: closing the last connection to a WAL database checkpoints it
        # (8 ms a call here). Prefect may call tasks from worker threads, hence the lock.
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock, self.db:
            self.db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
            # A hit rewrites its use counter: with WAL, NORMAL syncs at checkpoints, not on every hit (a crash may
            # lose the last recency updates, never the file's consistency).
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB, used INTEGER)")
            self.db.execute("CREATE INDEX IF NOT EXISTS entries_used ON entries (used)")
        self.hits = self.misses = 0

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

    def get(self, key: str) -> bytes | None:
        with self.lock, self.db as db:
            row = db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
            if row is not None:
                db.execute("UPDATE entries SET used = (SELECT COALESCE(MAX(used), 0) + 1 FROM entries) WHERE key = ?",
                           (key,))
        self.hits += row is not None
        self.misses += row is None
        return None if row is None else row[0]

    def put(self, key: str, value: bytes) -> None:
        with self.lock, self.db as db:
            db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, (SELECT COALESCE(MAX(used), 0) + 1 FROM entries))",
                       (key, value))
            db.execute("DELETE FROM entries WHERE key NOT IN (SELECT key FROM entries ORDER BY used DESC LIMIT ?)",
                       (self.capacity,))

    def __len__(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def __contains__(self, key: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM entries WHERE key = ?", (key,)).fetchone() is not None

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
