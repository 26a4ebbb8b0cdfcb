"""Peak memory of the archive and the Parquet store at scale, as the peak RSS of this process (tracemalloc misses
Arrow's buffers): N candidates inserted into the archive in generations of 10k, and the same N written as
per-generation Parquet parts and merged. Run alone (benchmarks/bench.py runs it as a subprocess), it prints one
JSON line; the baseline is the same process after its imports, before any candidate exists.

    .venv/bin/python benchmarks/memory.py --candidates 1000000
"""

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoforge.core.archive import QDArchive  # noqa: E402
from evoforge.core.store import RunStore  # noqa: E402


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries that over from the
    parent across fork and exec, so a child of a big process reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: no /proc; KiB there too


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=1_000_000)
    n = parser.parse_args().candidates
    per_generation = 10_000
    after_imports = peak_mb()
    rng = np.random.default_rng(0)
    bins = [0.005, 0.02, 0.05, 0.2, 0.5, 0.8, 0.95, 0.98, 0.995]
    archive = QDArchive(["genre", "ending"], [bins, bins])
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(folder)
        for g in range(n // per_generation):
            cid = np.arange(g * per_generation, (g + 1) * per_generation)
            texts = np.array([f"a candidate text of some length, number {i} " * 4 for i in cid], dtype=object)
            quality, measures = rng.random(per_generation), rng.random((per_generation, 2))
            archive.add(cid, texts, quality, measures, generation=g)
            part = pd.DataFrame({"cid": cid, "generation": g, "text": texts, "quality": quality,
                                 "measure_genre": measures[:, 0], "measure_ending": measures[:, 1]})
            store.write_generation(g, part, part.head(20), pd.DataFrame({"generation": [g], "expert_id": [0]}), {})
        merged = store.merge_candidates(n // per_generation)
        size = Path(merged).stat().st_size / 2**20
    print(json.dumps({"candidates": n, "peak_rss_mb": peak_mb(), "rss_after_imports_mb": after_imports,
                      "file_mb": size, "elites": archive.stats()["num_elites"]}))


if __name__ == "__main__":
    main()
