"""Tasks of a mixture-of-experts tournament: thin wrappers over `evoforge.steps.tournament`, one per step."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge.steps import tournament


@task(name="answer", cache_policy=NO_CACHE)
def answer(state: tournament.TournamentState, iteration: int, backends: dict):
    return tournament.answer_step(state, iteration, backends)


@task(name="judge-answers", cache_policy=NO_CACHE)
def judge_answers(state: tournament.TournamentState, answers, backends: dict):
    return tournament.judge_step(state, answers, backends)


@task(name="select-and-reward", cache_policy=NO_CACHE)
def select_and_reward(state: tournament.TournamentState, judged, iteration: int, backends: dict, external) -> dict:
    return tournament.reward_step(state, judged, iteration, backends, external)


@task(name="finish-tournament", cache_policy=NO_CACHE)
def finish_tournament(state: tournament.TournamentState, backends: dict) -> dict:
    return tournament.tournament_summary(state, backends)
