"""Island populations: K populations evolve side by side, each with its own experts, archive and pool (the model
OpenEvolve and ShinkaEvolve use for LLM-driven evolution); every M generations each island's best elites migrate to
a receiving island, whose archive and pool take them. The run's archive is the union: the best elite per cell over
the islands.

    attach_islands (new or restored) -> (evolve_island per island, in parallel -> gather_islands [migrate, union]
        -> commit_islands) x N

An island's generation (`evolve_island`) reads only its own island and returns a new one, so the islands can run in
any order, on any worker, and a retried one repeats exactly (each island draws from its own random stream).
`commit_islands` applies all of a generation's islands in one commit of the run folder.
"""

import copy
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from evoforge.core.archive import STATUS_NAMES, QDArchive
from evoforge.core.config import RunConfig
from evoforge.core.domain import Domain
from evoforge.core.experts import Expert, random_experts
from evoforge.judges.panel import Panel
from evoforge.steps.evolution import (
    ArchiveOutcome,
    RunState,
    archive_step,
    commit_generation,
    generate_population,
    generation_rng,
    judge_step,
)
from evoforge.steps.run_metrics import generation_metrics
from models.backend import Backend


@dataclass(eq=False)
class Island:
    """One population of an island run: its experts, its archive and the texts its mutation draws from."""

    index: int
    archive: QDArchive
    experts: list[Expert]
    pool: list[str]

    @property
    def model_names(self) -> list[str]:
        return sorted({e.backend for e in self.experts})


# --- making and restoring islands ----------------------------------------------------------------------------------


def attach_islands(state: RunState) -> RunState:
    """Give an island run's state its islands: new ones, or, when resuming, those committed after the last
    completed generation (archives, experts, and pools rebuilt in the order they grew)."""
    config, domain, store = state.config, state.domain, state.store
    seed_pool = domain.load_pool()
    bins = [a.bins for a in domain.axes]
    if state.completed == 0:
        islands = []
        for k in range(config.islands):
            rng = np.random.default_rng([config.seed, 2**31, k])  # each island's experts from a stream of its own
            experts = random_experts(config.experts, config.generator_models, config.sampling_ranges(),
                                     domain.generator.system_prompts, seed_pool, rng, shots=config.shots)
            islands.append(Island(k, QDArchive(domain.axis_names, bins), experts, list(seed_pool)))
    else:
        last = state.completed - 1
        elites = pd.read_parquet(store.island_snapshot(last))
        experts = store.read_experts(last)
        pools = island_pools(seed_pool, store.read_candidates(state.completed, columns=["generation", "island", "text",
                                                                                         "inserted"]),
                             store.read_migrations(state.completed), config.islands)
        islands = [
            Island(k, QDArchive.from_elites(domain.axis_names, bins, elites[elites["island"] == k]),
                   [Expert.from_row(r) for r in experts[experts["island"] == k].sort_values("expert_id")
                    .to_dict("records")], pools[k])
            for k in range(config.islands)
        ]
    state.islands = islands
    state.experts = [e for island in islands for e in island.experts]
    return state


def island_pools(seed_pool: list[str], candidates: pd.DataFrame, migrations: pd.DataFrame, k: int) -> list[list[str]]:
    """Each island's pool as it grew: the seed pool, then per generation the texts its archive took, then the
    migrants it took (the order `evolve_island` and `migrate` extend it in, so a resumed run draws the same items)."""
    pools = [list(seed_pool) for _ in range(k)]
    generations = sorted(set(candidates["generation"]) | set(migrations.get("generation", [])))
    for g in generations:
        taken = candidates[(candidates["generation"] == g) & candidates["inserted"]]
        for island, rows in taken.groupby("island", sort=True):
            pools[int(island)].extend(rows["text"])
        if len(migrations):
            moved = migrations[(migrations["generation"] == g) & migrations["inserted"]]
            for island, rows in moved.groupby("target", sort=True):
                pools[int(island)].extend(rows["text"])
    return pools


# --- one island's generation (a task on a worker) ----------------------------------------------------------------


@dataclass(frozen=True)
class IslandOutcome:
    """One island's generation: the island after it, its candidates with their outcome, and the seconds each
    stage took (generate, judge, archive)."""

    island: Island
    candidates: pd.DataFrame
    seconds: dict[str, float]


def first_cid(state: RunState, island: Island) -> int:
    """Candidate ids are unique over the run: each island numbers its generation's candidates in a block of its own."""
    return state.next_cid + island.index * state.config.batch_size


def evolve_island(island: Island, config: RunConfig, domain: Domain, panel: Panel, generation: int, first: int,
                  backends: dict[str, Backend]) -> IslandOutcome:
    """Generate, judge and archive one generation of one island. The island it is given is left as it was (a
    retried task repeats exactly); the island after the generation is returned."""
    island = copy.deepcopy(island)
    started = time.perf_counter()
    candidates = generate_population(config, domain, island.experts, island.pool, island.archive, generation,
                                     backends, first, generation_rng(config, generation, island.index))
    if len(candidates) > config.batch_size:  # the next island's ids start batch_size later
        raise RuntimeError(f"island {island.index} wrote {len(candidates)} candidates, more than batch_size")
    generated = time.perf_counter()
    judged = judge_step(panel, candidates, backends)
    judged_at = time.perf_counter()
    outcome = archive_step(island.archive, island.experts, judged, generation, config)
    seconds = {"generate": generated - started, "judge": judged_at - generated,
               "archive": time.perf_counter() - judged_at}
    island.experts = outcome.experts
    island.pool.extend(outcome.inserted_texts)
    candidates = outcome.candidates
    candidates.insert(2, "island", island.index)
    return IslandOutcome(island, candidates, seconds)


# --- migration and the union ---------------------------------------------------------------------------------------


def receivers(k: int, topology: str, rng: np.random.Generator) -> list[int]:
    """The island each island's migrants go to: 'ring' sends island i to i+1 (the last to the first); 'random' draws
    another island for each (never itself)."""
    if topology == "ring":
        return [(i + 1) % k for i in range(k)]
    if topology == "random":
        return [int((i + 1 + rng.integers(k - 1)) % k) for i in range(k)]
    raise ValueError(f"migration_topology: expected 'ring' or 'random', got {topology!r}")


def migrates_after(config: RunConfig, generation: int) -> bool:
    return config.islands > 1 and (generation + 1) % config.migration_interval == 0


def migrate(islands: list[Island], generation: int, config: RunConfig) -> pd.DataFrame:
    """Each island's best `migrants` elites (taken from every island before any receives) join their receiver's
    archive, and the pool where the archive takes them. Changes `islands` in place; returns a row per migrant."""
    rng = np.random.default_rng([config.seed, generation, 2**30])  # a stream apart from the islands' own
    targets = receivers(len(islands), config.migration_topology, rng)
    leaving = [island.archive.elites().sort_values(["quality", "cid"], ascending=[False, True]).head(config.migrants)
               for island in islands]
    measure_columns = [f"measure_{a}" for a in islands[0].archive.axis_names]
    rows = []
    for source, (elites, target) in enumerate(zip(leaving, targets)):
        receiver = islands[target]
        status = receiver.archive.add(elites["cid"].to_numpy(), elites["text"].tolist(), elites["quality"].to_numpy(),
                                      elites[measure_columns].to_numpy(), generation)
        taken = status > 0
        receiver.pool.extend(elites.loc[taken, "text"].tolist())
        rows.append(pd.DataFrame({
            "generation": generation, "source": source, "target": target, "cid": elites["cid"].to_numpy(np.int64),
            "text": elites["text"].tolist(), "quality": elites["quality"].to_numpy(float),
            **{c: elites[c].to_numpy(float) for c in measure_columns},
            "status": [STATUS_NAMES[s] for s in status], "inserted": taken,
        }))
    return pd.concat(rows, ignore_index=True)


def union_archive(islands: list[Island]) -> QDArchive:
    """The run's archive: every island's elites in one archive, so each cell holds the best of them (a migrant held
    by two islands is one elite)."""
    first = islands[0].archive
    elites = pd.concat([island.archive.elites() for island in islands], ignore_index=True)
    # A migrant's copies are one elite; the copy kept is the oldest (where it was written).
    elites = elites.sort_values(["generation", "cid"], kind="stable").drop_duplicates("cid")
    return QDArchive.from_elites(first.axis_names, [b.tolist() for b in first.bins], elites)


# --- the whole generation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IslandsOutcome:
    """A generation of every island, gathered: the islands after it (and after a migration), its candidates, and
    the migrants (None without a migration). `outcome` is what the run-level steps read, as for one population."""

    islands: list[Island]
    outcome: ArchiveOutcome
    migrations: pd.DataFrame | None
    seconds: dict[str, float]  # per stage, the slowest island's (the islands run at once)


def gather_islands(state: RunState, outcomes: list[IslandOutcome], generation: int) -> IslandsOutcome:
    """The islands' generation put together: migration when one is due, and the run's archive (the union) in
    `state.archive` (the one object a generation changes before its commit, as `archive_step` does for one
    population)."""
    outcomes = sorted(outcomes, key=lambda o: o.island.index)
    islands = [o.island for o in outcomes]
    candidates = pd.concat([o.candidates for o in outcomes], ignore_index=True)
    migrations = migrate(islands, generation, state.config) if migrates_after(state.config, generation) else None
    state.archive = union_archive(islands)
    experts = [e for island in islands for e in island.experts]
    seconds = {stage: max(o.seconds[stage] for o in outcomes) for stage in outcomes[0].seconds}
    return IslandsOutcome(islands, ArchiveOutcome(candidates, experts), migrations, seconds)


def island_generation_metrics(state: RunState, islands: IslandsOutcome, embedder=None) -> dict[str, float]:
    """A generation's metrics for an island run: the run-level ones over the union (as for one population, without
    per-expert ones: expert ids repeat across islands) and, per island, QD score, coverage, elites, inserted
    candidates and expert values; `migrations`: the migrants moved after this generation (0 between migrations)."""
    metrics = generation_metrics(state, replace(islands.outcome, experts=[]), embedder=embedder)
    metrics.update({f"seconds_{stage}": seconds for stage, seconds in islands.seconds.items()})
    candidates = islands.outcome.candidates
    for island in islands.islands:
        stats = island.archive.stats()
        metrics[f"island/{island.index}/qd_score"] = stats["qd_score"]
        metrics[f"island/{island.index}/coverage"] = stats["coverage"]
        metrics[f"island/{island.index}/num_elites"] = stats["num_elites"]
        metrics[f"island/{island.index}/inserted"] = int(candidates.loc[candidates["island"] == island.index,
                                                                         "inserted"].sum())
        for expert in island.experts:
            metrics[f"island/{island.index}/expert/{expert.expert_id}/value"] = expert.value
    migrations = islands.migrations
    metrics["migrations"] = 0 if migrations is None else len(migrations)
    metrics["migrants_taken"] = 0 if migrations is None else int(migrations["inserted"].sum())
    return metrics


def commit_islands(state: RunState, generation: int, islands: IslandsOutcome, metrics: dict, tracker) -> None:
    """Commit every island's generation at once: the islands' files first, then the run's (`commit_generation`,
    whose state.json is the commit marker), so a run resumes after its last generation of all islands."""
    state.islands = islands.islands
    elites = pd.concat([island.archive.elites().assign(island=island.index) for island in islands.islands],
                       ignore_index=True)
    state.store.write_islands(generation, elites, islands.migrations)
    commit_generation(state, generation, islands.outcome, metrics, tracker)

