"""Loading a model backend by name: one instance per name and precision per process."""

import functools

from models.backend import Backend


@functools.lru_cache(maxsize=4)
def load_backend(name: str = "smollm2", precision: str = "float32") -> Backend:
    """A model loads once and everything in the process shares it."""
    from models.transformers_backend import DTYPES, TransformersBackend, resolve_precision  # torch loads here

    return TransformersBackend(name, dtype=DTYPES[resolve_precision(precision)])
