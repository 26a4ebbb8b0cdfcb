"""Where a model computes and in what number format: `device` and `precision` settings resolved for this machine.

`auto` means: a CUDA GPU when torch sees one (else the CPU); bfloat16 where the hardware computes it natively
(a GPU that supports it; a CPU with AVX-512 BF16 or AMX), else float32, the reference. Resolution is a pure
function of what it is told about the machine, so the CUDA path is tested on CPU-only machines too.
"""

import re
from pathlib import Path

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"

# Rows per forward pass when scoring (judges): a CPU's two cores are busy at 16 rows, a GPU wants hundreds.
SCORE_BATCH = {"cpu": 16, "cuda": 256}


class DeviceError(ValueError):
    """A device setting this machine cannot honour."""


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str = "auto", cuda_count: int | None = None) -> str:
    """'cpu' or 'cuda:N' for a `device` setting; `cuda_count` is how many GPUs torch sees (asked when not given)."""
    if not re.match(DEVICE_PATTERN, device):
        raise DeviceError(f"device: {device!r} is not one of auto, cpu, cuda, cuda:N")
    if device == "cpu":
        return "cpu"
    count = cuda_devices() if cuda_count is None else cuda_count
    if device == "auto":
        return "cuda:0" if count else "cpu"
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        seen = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise DeviceError(f"device: {device!r} asked for, but torch sees {seen} here; use device 'auto' or 'cpu'")
    return f"cuda:{index}"


def resolve_precision(precision: str = "auto", device: str = "cpu", cpuinfo: str | None = None,
                      cuda_bf16: bool | None = None) -> str:
    """'bfloat16' or 'float32' for a `precision` setting on `device` (a resolved one). On the CPU 'auto' is
    bfloat16 where the CPU has BF16 units (measured 2x faster generation and 3x faster judging, judgements
    within 0.01); `cpuinfo` is the text of /proc/cpuinfo (read when not given). On a GPU it is bfloat16 where
    the GPU supports it (`cuda_bf16`, asked of torch when not given)."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = torch.cuda.is_bf16_supported()
        return "bfloat16" if cuda_bf16 else "float32"
    if cpuinfo is None:
        cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(cpuinfo.split())
    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"


def default_score_batch(device: str) -> int:
    return SCORE_BATCH["cuda" if device.startswith("cuda") else "cpu"]
