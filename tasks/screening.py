"""Tasks of screening by the value model (evoforge.steps.screening): its fit and the split of a generation's
candidates, each its own task so the Prefect UI shows what screening costs."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge.steps import screening
from evoforge.steps.evolution import RunState


@task(name="fit-value-model", cache_policy=NO_CACHE)
def fit_value_model(state: RunState, generation: int, embedder) -> screening.ValueFit:
    """Refit the value model on every candidate judged before `generation` (held-out error in its metrics)."""
    return screening.fit_value(state, generation, embedder)


@task(name="screen-candidates", cache_policy=NO_CACHE)
def screen_candidates(state: RunState, candidates, fit: screening.ValueFit, generation: int, embedder):
    """The candidates to judge and those held back."""
    return screening.screen(state, candidates, fit, generation, embedder)
