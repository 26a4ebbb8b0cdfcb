"""Loading a model backend by name: one instance per name, precision and device per process."""

import functools

from models.backend import Backend
from models.devices import resolve_device, resolve_precision


def load_backend(name: str = "smollm2", precision: str = "float32", device: str = "auto") -> Backend:
    """A model loads once and everything in the process shares it. `precision` and `device` may be 'auto'
    (see models.devices); they are resolved first, so 'auto' and what it means share one instance."""
    device = resolve_device(device)
    return _load(name, resolve_precision(precision, device), device)


@functools.lru_cache(maxsize=4)
def _load(name: str, precision: str, device: str) -> Backend:
    from models.transformers_backend import DTYPES, TransformersBackend  # torch loads here

    return TransformersBackend(name, dtype=DTYPES[precision], device=device)
