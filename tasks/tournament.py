"""Tasks of a mixture-of-experts tournament: thin wrappers over `evoforge.steps.tournament`, one per step."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge.judges.panel import Panel
from evoforge.steps import tournament


@task(name="fit-judges", cache_policy=NO_CACHE)
def fit_judges(state: tournament.TournamentState, backends: dict) -> Panel:
    return tournament.fit_tournament_judges(state, backends)


@task(name="answer", cache_policy=NO_CACHE)
def answer(state: tournament.TournamentState, iteration: int, backends: dict):
    return tournament.answer_step(state, iteration, backends)


@task(name="judge-answers", cache_policy=NO_CACHE)
def judge_answers(state: tournament.TournamentState, panel: Panel, answers, backends: dict):
    return tournament.judge_step(state, panel, answers, backends)


@task(name="select-and-reward", cache_policy=NO_CACHE)
def select_and_reward(state: tournament.TournamentState, judged, iteration: int, backends: dict,
                      external) -> tournament.IterationOutcome:
    return tournament.reward_step(state, judged, iteration, backends, external)


@task(name="finish-tournament", cache_policy=NO_CACHE)
def finish_tournament(state: tournament.TournamentState, panel: Panel, backends: dict) -> dict:
    return tournament.tournament_summary(state, panel, backends)
