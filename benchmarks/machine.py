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


def machine_at_start(precision: str = "auto") -> dict:
    """The machine, the precision the models compute in (`precision` resolved as runs resolve it) and how busy the
    machine was as the benchmark started (other jobs on the cores slow every timing)."""
    from models.devices import resolve_precision

    return {**machine_info(), "precision": resolve_precision(precision), "load_average_at_start": os.getloadavg()[0]}


def save_table(folder: str, name: str, payload: dict) -> Path:
    """Write a benchmark's payload (with its `machine` and Markdown `table`) as `<date>-<host>-<name>.json` in
    `folder`, and print the table and the path."""
    import json
    from datetime import datetime, timezone

    path = Path(folder) / f"{datetime.now(timezone.utc):%Y-%m-%d}-{payload['machine']['host']}-{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(payload["table"])
    print(f"\nresults: {path}")
    return path
