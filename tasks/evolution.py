"""Tasks of an evolution run. Each is one coarse step (never one task per candidate: a task costs ~15 ms).

They take the in-process `RunState` and models, which cannot be hashed or cached, so caching is off; a run
resumes from its run folder instead (see `evoforge.store`).
"""

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge import run
from evoforge.config import RunConfig
from evoforge.judging import fit_heldout_panel, report_metrics


@task(name="prep-dataset", cache_policy=NO_CACHE)
def prep_dataset(config: RunConfig) -> run.RunState:
    return run.prepare_run(config)


@task(name="fit-judges", cache_policy=NO_CACHE)
def fit_judges(state: run.RunState, backends: dict, tracker) -> None:
    """Measure the judges on the domain's reference labels and fit calibration and combination on them."""
    panel = run.fit_judges(state, backends)
    if len(panel.report):
        tracker.log_metrics(report_metrics(panel.report), step=0)
        tracker.log_artifact(state.store.root / "judges.parquet", "judges")


@task(name="fit-heldout-judge", cache_policy=NO_CACHE)
def fit_heldout_judge(state: run.RunState, backends: dict):
    """The held-out judge that checks the elites each generation (never used for selection)."""
    return fit_heldout_panel(backends, state.domain)


@task(name="check-elites-heldout", cache_policy=NO_CACHE)
def check_elites_heldout(state: run.RunState, panel, backends: dict) -> dict:
    """The held-out judge's agreement with the archive's cells (new elites are judged once)."""
    return run.heldout_metrics(state, panel, backends)


@task(name="generate-candidates", cache_policy=NO_CACHE)
def generate_candidates(state: run.RunState, generation: int, backends: dict):
    return run.generate_step(state, generation, backends)


@task(name="judge-candidates", cache_policy=NO_CACHE)
def judge_candidates(state: run.RunState, candidates, backends: dict):
    return run.judge_step(state, candidates, backends)


@task(name="update-archive", cache_policy=NO_CACHE)
def update_archive(state: run.RunState, judged, generation: int):
    return run.archive_step(state, judged, generation)


@task(name="record-generation", cache_policy=NO_CACHE)
def record_generation(state: run.RunState, generation: int, candidates, metrics: dict, tracker) -> None:
    run.record_step(state, generation, candidates, metrics, tracker)


@task(name="finish-run", cache_policy=NO_CACHE)
def finish_run(state: run.RunState, tracker) -> dict:
    return run.finish_run(state, tracker)
