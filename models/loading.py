"""Loading a model backend by name: one instance per name and precision per process.

`openai:...` names are models on OpenAI-compatible servers (models.openai_backend); every other name resolves to
local files (models.resolve) and loads in this process.
"""

import functools

from models.backend import Backend
from models.resolve import is_server_model


def load_backend(name: str = "smollm2", precision: str = "float32") -> Backend:
    """A model loads once and everything in the process shares it. A server model ignores `precision` (the server
    decides its number format), so one client (one controller over its nodes) serves every precision."""
    return _server_backend(name) if is_server_model(name) else _local_backend(name, precision)


@functools.lru_cache(maxsize=4)
def _local_backend(name: str, precision: str) -> Backend:
    from models.transformers_backend import DTYPES, TransformersBackend, resolve_precision  # torch loads here

    return TransformersBackend(name, dtype=DTYPES[resolve_precision(precision)])


@functools.lru_cache(maxsize=8)
def _server_backend(name: str) -> Backend:
    from models.openai_backend import OpenAIBackend

    return OpenAIBackend(name)
