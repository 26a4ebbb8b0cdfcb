"""Loading a model backend by name: one instance per name, precision and device per process.

`openai:...` names are models on OpenAI-compatible servers (models.openai_backend); every other name resolves to
local files (models.resolve) and loads in this process, on a device (models.devices).
"""

import functools

from models.backend import Backend
from models.devices import resolve_device, resolve_precision
from models.resolve import is_server_model


def load_backend(name: str = "smollm2", precision: str = "float32", device: str = "auto") -> Backend:
    """A model loads once and everything in the process shares it. `precision` and `device` may be 'auto'; they
    are resolved first, so 'auto' and what it means share one instance. A server model ignores both (the server
    decides), so one client (one controller over its nodes) serves every setting."""
    if is_server_model(name):
        return _server_backend(name)
    device = resolve_device(device)
    return _local_backend(name, resolve_precision(precision, device), device)


@functools.lru_cache(maxsize=4)
def _local_backend(name: str, precision: str, device: str) -> Backend:
    from models.transformers_backend import DTYPES, TransformersBackend  # torch loads here

    return TransformersBackend(name, dtype=DTYPES[precision], device=device)


@functools.lru_cache(maxsize=8)
def _server_backend(name: str) -> Backend:
    from models.openai_backend import OpenAIBackend

    return OpenAIBackend(name)


def backend_stats(backends: dict[str, Backend]) -> dict[str, float]:
    """Server backends' per-node counters (requests, errors, latency p50/p95, tokens: backend/<node>/...), summed
    over their lifetime, for MLflow; in-process backends have none."""
    return {k: v for b in backends.values() if hasattr(b, "stats") for k, v in b.stats().items()}
