"""Overlapping word windows (sizes and why: evoforge.core.config.CHUNK_WORDS), each with its position and hash."""

import hashlib
from dataclasses import dataclass

from evoforge.core.config import CHUNK_WORDS, OVERLAP_WORDS


@dataclass(frozen=True)
class Chunk:
    position: int  # the chunk's first word, counted from the start of its text
    text: str
    hash: str  # sha256 of the text: the chunk's identity when its source is re-ingested


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_text(text: str, words: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[Chunk]:
    """Windows of `words` words, each starting `words - overlap` after the previous one; the last window ends at
    the text's end (no tail shorter than the overlap is left on its own). Whitespace is normalised."""
    if not 0 <= overlap < words:
        raise ValueError(f"chunking: overlap ({overlap}) must be at least 0 and below the chunk size ({words})")
    tokens = text.split()
    if not tokens:
        return []
    step = words - overlap
    starts = list(range(0, max(len(tokens) - overlap, 1), step))
    chunks = []
    for start in starts:
        piece = " ".join(tokens[start : start + words])
        chunks.append(Chunk(start, piece, content_hash(piece)))
    return chunks
