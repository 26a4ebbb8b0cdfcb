"""The mixture-of-experts tournament as a Prefect flow: answer one task with the best of many experts.

prepare -> (answer -> judge -> [wait for a person's reward] -> select and reward) x iterations -> finish

Annotations here stay real (no postponed-annotations import): Prefect builds the UI's parameter form from them.
"""

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.client.orchestration import get_client
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Running
from pydantic import Field

from evoforge.steps import tournament
from evoforge.core.config import TournamentConfig, flat_params
from evoforge.core.tracking import Tracker
from flows.links import prefect_run_tags
from models.loading import backend_stats, load_backend
from tasks.tournament import answer, finish_tournament, fit_judges, judge_answers, select_and_reward

EXAMPLE = TournamentConfig(
    instruction="Evaluate the potential impact and investment viability of AI, blockchain, quantum computing and "
    "biotechnology.",
    context="A board exploring emerging technologies asks for a short recommendation.",
)


class ExternalReward(RunInput):
    """A person's reward for the selected answer, typed in the Prefect UI when the run pauses."""

    reward: float | None = Field(
        None, ge=-10, le=10, description="Reward for the selected answer (e.g. 0 bad ... 1 excellent); empty: none"
    )


def wait_for_reward(iteration: int, seconds: int) -> float | None:
    """Pause the flow run until a person types a reward in the UI; after `seconds`, go on without one."""
    try:
        given = pause_flow_run(wait_for_input=ExternalReward, timeout=seconds, key=f"reward-{iteration}")
    except FlowPauseTimeout:
        # Nobody answered in time. The server no longer accepts a resume of an expired pause, so the run sets
        # itself running again and goes on without a reward.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.get_id(), Running(), force=True)
        return None
    return given.reward


@flow(name="moe_tournament", log_prints=True)
def moe_tournament(config: TournamentConfig = EXAMPLE) -> dict:
    """Answer one task with the best of many experts; the experts' values learn who earns reward.

    Args:
        config: The task, the experts, the judges, the stopping rule and where rewards come from
    """
    logger = get_run_logger()
    state = tournament.prepare_tournament(config)
    resumed = state.mlflow_run_id is not None
    tracker = Tracker(config.experiment, state.root.name, run_id=state.mlflow_run_id,
                      tags={**prefect_run_tags(), "kind": "tournament"})
    state.mlflow_run_id = tracker.run_id
    if resumed:
        logger.info("resuming %s after %d committed iterations", state.root.name, len(state.iterations))
        # An iteration commits before its metrics are logged: a kill in between left its metrics out.
        logged = {m.step for m in tracker.client.get_metric_history(tracker.run_id, "reward")}
        for k, record in enumerate(state.iterations):
            if k not in logged:
                tracker.log_metrics(tournament.iteration_metrics(record, state.answers[k]), step=k)
    else:
        tracker.log_params({**flat_params(config), "run_dir": str(state.root.resolve())})
    with tracker.failing_on_error():
        backends = {name: load_backend(name, config.precision, config.device) for name in state.model_names}
        panel = fit_judges(state, backends)
        for iteration in range(tournament.next_iteration(state), config.max_iterations):
            answers = answer(state, iteration, backends)
            judged = judge_answers(state, panel, answers, backends)
            external = tournament.external_reward(config, iteration)
            if external is None and config.wait_for_reward_s > 0:
                external = wait_for_reward(iteration, config.wait_for_reward_s)
            outcome = select_and_reward(state, judged, iteration, backends, external)
            tournament.commit_iteration(state, outcome)
            record = outcome.record
            tracker.log_metrics(tournament.iteration_metrics(record, judged), step=iteration)
            logger.info("iteration %d: expert %d selected (%s), reward %.2f, total %.2f", iteration,
                        record["expert_id"], record["reward_label"], record["reward"], record["total_reward"])
            if tournament.should_stop(config, iteration, state.total_reward):
                break
        summary = finish_tournament(state, panel, backends)
        tracker.log_metrics(backend_stats(backends), step=len(state.iterations))
        for name in ("answers.parquet", "experts.parquet", "iterations.parquet", "best_answer.md", "records.jsonl"):
            tracker.log_artifact(state.root / name, "tournament")
        tracker.finish("FINISHED")
    summary["mlflow_run_id"] = tracker.run_id
    summary["mlflow_run_url"] = tracker.run_url()
    create_markdown_artifact(key="tournament-summary", markdown=tournament.summary_markdown(summary),
                             description=f"{summary['reward_label']} answer by expert {summary['expert_id']}")
    return summary
