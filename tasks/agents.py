"""Tasks of search agents in a run (evoforge.steps.agents): preparing a generation's steering (the value model
and the manager's bandit), its own task so the Prefect UI shows what it costs."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge.steps import agents
from evoforge.steps.evolution import RunState


@task(name="steer-generation", cache_policy=NO_CACHE)
def steer_generation(state: RunState, generation: int, embedder) -> agents.Steering:
    """The value model (trained on earlier runs, or refitted on this run) and the manager's bandit."""
    return agents.steer(state, generation, embedder)
