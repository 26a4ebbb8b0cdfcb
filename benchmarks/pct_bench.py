"""How many candidates does it take to land in a chosen cell? Perceptual control against random sampling and niche
prompting.

    .venv/bin/python benchmarks/pct_bench.py [--seeds 0 1 2] [--cap 24] [--batch 4] [--threads 1]

For each chosen cell (opinions: both extremes and the middle of the sentiment axis; stories: two corners and the
middle of the genre x ending grid) and seed, each arm starts from a fresh state (the domain's seed pool, 4 random
experts drawn from the seed as a run draws them, an empty archive) and writes batches of `--batch` candidates (one
per expert), all aimed at that one cell, judged by the run's default panel (calibrated as in a run), until a
candidate lands in the cell (valid and in it) or `--cap` candidates were written (censored). Between batches the
arm's state moves on as in a run: `archive_step` inserts the candidates and rewards the experts, and inserted texts
join the pool. Arms:

- `lmx`: random sampling (QDAIF's LMX few-shot mutation; the cell is not named, it is hit by luck);
- `target`: niche prompting (`search: target` with the cell fixed: the archive's elites nearest the cell as named
  examples, the cell's niche named on the open line);
- `pct`: the perceptual-control loop (`search: pct` with the cell fixed: examples from every text the arm has had
  judged, nearest the aim, the aim moved by the learned gain times the error of the last batch).

`target` and `pct` write the same first batch (nothing judged yet: the same pool items and open line, the same
random stream), so they differ only from the second batch on, where the loop acts.

Reports per cell and arm the candidates it took (per seed; censored as `>cap`), and per arm the cells landed and
the mean candidates to land (censored counted as the cap, so a lower bound for an arm that misses), with the
ratio to `lmx` and to `target`; and the mean distance (in bins, mean over axes) of the arm's candidates from the
cell's centre, per batch. Writes benchmarks/results/<date>-<host>-pct.json (after every cell, so a stopped
benchmark keeps what it measured).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.core.archive import QDArchive  # noqa: E402
from evoforge.core.config import RunConfig  # noqa: E402
from evoforge.core.domain import load_domain  # noqa: E402
from evoforge.core.experts import random_experts  # noqa: E402
from evoforge.search.control import Controller, error, perceive, reference  # noqa: E402
from evoforge.search.generation import plan_candidates, write_candidates  # noqa: E402
from evoforge.steps.evolution import archive_step, judge_step, make_panel  # noqa: E402

ARMS = ["lmx", "target", "pct"]
CELLS = {"opinions": [(0,), (10,), (19,)], "stories": [(9, 0), (5, 5), (0, 9)]}


def aim_at(cell: tuple[int, ...], arm: str, domain, config: RunConfig, panel, backends: dict, args,
           seed: int) -> dict:
    """One arm's attempts at one cell from a fresh state, until a candidate lands or the cap is reached."""
    pool = domain.load_pool()
    experts = random_experts(config.experts, config.generator_models, config.sampling_ranges(),
                             domain.generator.system_prompts, pool, np.random.default_rng([seed, 2**31]),
                             shots=config.shots)
    archive = QDArchive(domain.axis_names, [a.bins for a in domain.axes])
    record, distances, tokens, landed_at = [], [], 0, None
    started = time.perf_counter()
    for batch in range(-(-args.cap // args.batch)):
        rng = np.random.default_rng([seed, batch])
        controller = Controller.from_record(domain, pd.concat(record) if record else None, config.pct_quality,
                                            config.pct_temperature_gain)
        plans = plan_candidates(experts, list(range(len(experts))), args.batch, domain, pool, archive.elites(),
                                config.near_probability, rng, search=arm, controller=controller, cell=cell)
        written = write_candidates(backends, plans, domain, config.continue_tokens, seed=int(rng.integers(2**31)))
        written.insert(0, "cid", np.arange(batch * args.batch, (batch + 1) * args.batch))
        written.insert(1, "generation", batch)
        judged = judge_step(panel, written, backends)
        outcome = archive_step(archive, experts, judged, batch, config)
        experts, candidates = outcome.experts, outcome.candidates
        pool.extend(outcome.inserted_texts)
        record.append(candidates)
        tokens += int(candidates["new_tokens"].sum())
        valid = candidates["valid"].to_numpy(dtype=bool)
        positions = perceive(domain, candidates)
        distances.append(float(np.abs(error(reference(cell), positions[valid])).mean()) if valid.any() else None)
        hits = valid & (np.floor(positions) == np.asarray(cell)).all(axis=1)
        if hits.any():
            landed_at = batch * args.batch + int(np.argmax(hits)) + 1
            break
    return {"cell": list(cell), "arm": arm, "seed": seed, "candidates": landed_at, "censored": landed_at is None,
            "written": sum(len(r) for r in record), "tokens": tokens, "distance_per_batch": distances,
            "seconds": time.perf_counter() - started}


def shown(value, cap: int) -> str:
    return f">{cap}" if value is None or pd.isna(value) else str(int(value))


def markdown(rows: pd.DataFrame, cap: int) -> str:
    """Per cell the candidates each arm took per seed; per domain and arm the summary and ratios."""
    lines = ["| domain | cell | " + " | ".join(f"{a}: candidates to land (per seed)" for a in ARMS) + " |",
             "|---|---|" + "---|" * len(ARMS)]
    for (domain, cell), group in rows.groupby(["domain", rows["cell"].map(tuple)], sort=False):
        per_arm = [", ".join(shown(v, cap) for v in group[group["arm"] == a].sort_values("seed")["candidates"])
                   for a in ARMS]
        lines.append(f"| {domain} | {cell} | " + " | ".join(per_arm) + " |")
    lines += ["", "| domain | arm | landed (cell x seed) | mean candidates to land (censored = cap) | vs lmx | "
              "vs target | mean distance from the cell centre, bins (batch 1 / last batch) | tokens |",
              "|---|---|---|---|---|---|---|---|"]
    for domain, group in rows.groupby("domain", sort=False):
        mean = {a: group[group["arm"] == a]["candidates"].fillna(cap).mean() for a in ARMS}
        for arm in ARMS:
            mine = group[group["arm"] == arm]
            first = np.nanmean([d[0] for d in mine["distance_per_batch"] if d and d[0] is not None])
            last = np.nanmean([next((x for x in reversed(d) if x is not None), np.nan) for d in mine["distance_per_batch"]])
            lines.append(f"| {domain} | {arm} | {int((~mine['censored']).sum())} of {len(mine)} | {mean[arm]:.1f} | "
                         f"{mean[arm] / mean['lmx']:.2f} | {mean[arm] / mean['target']:.2f} | {first:.2f} / {last:.2f} | "
                         f"{int(mine['tokens'].sum())} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domains", nargs="+", default=list(CELLS))
    p.add_argument("--cells", nargs="+", default=None,
                   help="cells to aim at instead of the domain's chosen ones (one domain): '4' or '5,5'")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    p.add_argument("--cap", type=int, default=24, help="candidates per arm, cell and seed before it counts as a miss")
    p.add_argument("--batch", type=int, default=4, help="candidates per batch (one per expert)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--pct-temperature-gain", type=float, default=0.0,
                   help="pct: the temperature rise where the grid's edge cuts the aim (0: off)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="pct", help="results file: <date>-<host>-<name>.json")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.cells and len(args.domains) != 1:
        p.error("--cells: name one domain with --domains, whose grid the cells are on")
    import torch

    from benchmarks.machine import machine_at_start, save_table
    from models.loading import load_backend

    torch.set_num_threads(args.threads)
    machine = machine_at_start()
    backends = {"smollm2": load_backend("smollm2", "auto")}
    rows, started = [], time.perf_counter()
    payload = {}
    for name in args.domains:
        domain = load_domain(name)
        config = RunConfig(domain=name, experts=args.batch, batch_size=args.batch, max_new_tokens=args.max_new_tokens,
                           pct_temperature_gain=args.pct_temperature_gain)
        panel = make_panel(config, domain, backends)
        cells = [tuple(int(b) for b in c.split(",")) for c in args.cells] if args.cells else CELLS[name]
        if any(len(c) != len(domain.axes) or not all(0 <= b < n for b, n in zip(c, domain.grid_shape)) for c in cells):
            p.error(f"--cells: expected cells of {name}'s grid {domain.grid_shape}, e.g. "
                    f"{','.join('0' * len(domain.axes))}; got {args.cells}")
        for cell in cells:
            for seed in args.seeds:
                for arm in args.arms:
                    row = {"domain": name, **aim_at(cell, arm, domain, config, panel, backends, args, seed)}
                    rows.append(row)
                    print(f"{name} {cell} seed {seed} {arm}: {shown(row['candidates'], args.cap)} "
                          f"({row['seconds']:.0f} s)", flush=True)
            frame = pd.DataFrame(rows)
            payload = {"machine": machine, "args": vars(args), "seconds": time.perf_counter() - started,
                       "load_average_at_end": os.getloadavg()[0], "rows": rows,
                       "table": markdown(frame, args.cap) if set(args.arms) == set(ARMS) else ""}
            save_table(args.results, args.name, payload)
    return payload


if __name__ == "__main__":
    main()
