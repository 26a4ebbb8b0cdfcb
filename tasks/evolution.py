"""Tasks of an evolution run. Each is one coarse step (never one task per candidate: a task costs ~15 ms).

They take the in-process `RunState` and models, which cannot be hashed or cached, so caching is off; a run
resumes from its run folder instead (see `evoforge.core.store`). Each returns what its step made; only
`record-generation` changes the state (see `evoforge.steps.evolution.commit_generation`).
"""

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge.core.config import RunConfig, judge_models
from evoforge.judges.panel import Panel, fit_heldout_panel, report_metrics
from evoforge.steps import evolution as steps
from evoforge.steps import islands
from evoforge.steps.run_metrics import heldout_metrics
from evoforge.steps.run_report import write_run_outputs
from models.backend import Backend
from models.loading import load_backend

Backends = dict[str, Backend]


@task(name="prep-dataset", cache_policy=NO_CACHE)
def prep_dataset(config: RunConfig) -> steps.RunState:
    state = steps.prepare_run(config)
    return islands.attach_islands(state) if config.islands > 1 else state


@task(name="fit-judges", cache_policy=NO_CACHE)
def fit_judges(state: steps.RunState, backends: Backends, tracker) -> Panel:
    """Measure the judges on the domain's reference labels and fit calibration and combination on them."""
    panel = steps.fit_run_panel(state, backends)
    if len(panel.report):
        tracker.log_metrics(report_metrics(panel.report), step=0)
        tracker.log_artifact(state.store.root / "judges.parquet", "judges")
    return panel


@task(name="fit-heldout-judge", cache_policy=NO_CACHE)
def fit_heldout_judge(state: steps.RunState, backends: Backends) -> Panel:
    """The held-out judge that checks the elites each generation (never used for selection)."""
    references = steps.run_references(state.config, state.domain, backends)
    return fit_heldout_panel(backends, state.domain, references.texts, references.auto_calibration)


@task(name="check-elites-heldout", cache_policy=NO_CACHE)
def check_elites_heldout(state: steps.RunState, panel: Panel, backends: Backends) -> dict:
    """The held-out judge's agreement with the archive's cells (new elites are judged once)."""
    return heldout_metrics(state, panel, backends)


@task(name="generate-candidates", cache_policy=NO_CACHE)
def generate_candidates(state: steps.RunState, generation: int, backends: Backends, batch_size: int | None = None,
                        steering=None):
    return steps.generate_step(state, generation, backends, batch_size, steering)


@task(name="judge-candidates", cache_policy=NO_CACHE)
def judge_candidates(panel: Panel, candidates, backends: Backends):
    return steps.judge_step(panel, candidates, backends)


@task(name="judge-shard", cache_policy=NO_CACHE)
def judge_shard(panel: Panel, texts: list[str], precision: str, device: str):
    """The fitted panel's scores of one shard of a generation's texts (a frame, one row per text), on whichever
    worker runs it: only the texts and the panel travel; the judges' models come from the worker's own cache."""
    return panel.judge(worker_backends(sorted(judge_models(panel.judges)), precision, device), texts)


@task(name="update-archive", cache_policy=NO_CACHE)
def update_archive(state: steps.RunState, judged, generation: int) -> steps.ArchiveOutcome:
    return steps.archive_step(state.archive, state.experts, judged, generation, state.config)


@task(name="record-generation", cache_policy=NO_CACHE)
def record_generation(state: steps.RunState, generation: int, outcome: steps.ArchiveOutcome, metrics: dict,
                      tracker) -> None:
    steps.commit_generation(state, generation, outcome, metrics, tracker)


@task(name="finish-run", cache_policy=NO_CACHE)
def finish_run(state: steps.RunState, tracker) -> dict:
    return write_run_outputs(state, tracker)


# --- island runs (evoforge.steps.islands) ------------------------------------------------------------------------


@task(name="evolve-island", cache_policy=NO_CACHE)
def evolve_island(island: islands.Island, config: RunConfig, domain, panel: Panel, generation: int,
                  first_cid: int) -> islands.IslandOutcome:
    """One island's generation, on whichever worker runs it. Only settings and the island travel with the task:
    the models come from the worker process's own cache (`load_backend` keeps one instance per name, precision and
    device in each process), loaded by the first task there that needs them."""
    names = sorted(set(island.model_names) | judge_models(config.judges))
    return islands.evolve_island(island, config, domain, panel, generation, first_cid,
                                 worker_backends(names, config.precision, config.device))


def worker_backends(names: list[str], precision: str, device: str) -> Backends:
    """The models of this process (a Dask worker's), loaded at their first use and kept."""
    return {name: load_backend(name, precision, device) for name in names}


@task(name="gather-islands", cache_policy=NO_CACHE)
def gather_islands(state: steps.RunState, outcomes: list[islands.IslandOutcome],
                   generation: int) -> islands.IslandsOutcome:
    return islands.gather_islands(state, outcomes, generation)


@task(name="record-islands", cache_policy=NO_CACHE)
def record_islands(state: steps.RunState, generation: int, gathered: islands.IslandsOutcome, metrics: dict,
                   tracker) -> None:
    islands.commit_islands(state, generation, gathered, metrics, tracker)
