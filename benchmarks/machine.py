"""The machine a benchmark ran on, recorded beside its numbers (bfloat16 kernels and speed differ by CPU)."""

import os
import platform
import socket
from pathlib import Path


def machine_info() -> dict:
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), None)
    return {"host": socket.gethostname(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu": model or platform.machine(),
            "bf16_units": [f for f in ("amx_bf16", "avx512_bf16") if f in cpuinfo.split()]}
