"""The mixture-of-experts tournament: its rules on constructed inputs, then the flow on the real model."""

import contextvars
import json
import threading
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from evoforge.core.config import TournamentConfig
from evoforge.core.experts import Expert
from evoforge.core.prompts import without_list_marker
from models.backend import SamplingSettings
from evoforge.steps.tournament import (
    external_reward_from_file,
    last_layer,
    layer_prompt,
    load_population,
    load_spec,
    prepare_tournament,
    select_answer,
    should_stop,
    task_questions,
)


def tiny(tmp_path, **overrides) -> TournamentConfig:
    values = dict(
        instruction="Evaluate the investment viability of AI and biotechnology for a board.",
        context="The board meets next week.", experts=2, max_new_tokens=12, continue_tokens=4,
        min_iterations=1, max_iterations=2, reward_threshold=100.0, out=str(tmp_path / "runs"),
        population_file=str(tmp_path / "population.parquet"),
    )
    return TournamentConfig(**{**values, **overrides})


def test_select_answer_takes_the_best_unless_exploring():
    rng = np.random.default_rng(0)
    scores = np.array([0.2, np.nan, 0.9, 0.5])
    assert select_answer(scores, 0.0, rng) == (2, False)
    picks = [select_answer(scores, 1.0, rng) for _ in range(50)]
    assert all(explored and i in (0, 3) for i, explored in picks)  # exploring never picks the failed (NaN) answer
    assert select_answer(np.array([np.nan, 0.1]), 1.0, rng) == (1, False)  # nothing else to explore


def test_stops_at_threshold_after_minimum_or_at_maximum(tmp_path):
    config = tiny(tmp_path, min_iterations=2, max_iterations=5, reward_threshold=1.5)
    assert not should_stop(config, 0, total_reward=3.0)  # the minimum comes first
    assert should_stop(config, 1, total_reward=1.5)
    assert not should_stop(config, 2, total_reward=1.0)
    assert should_stop(config, 4, total_reward=0.0)


def test_external_rewards_from_a_file(tmp_path):
    path = tmp_path / "rewards.txt"
    path.write_text("0.5\n\n1\nexcellent\n")
    assert external_reward_from_file(path, 0) == 0.5
    assert external_reward_from_file(path, 1) is None  # blank line: no reward this iteration
    assert external_reward_from_file(path, 9) is None
    with pytest.raises(ValueError, match="line 4: expected a number"):
        external_reward_from_file(path, 3)


def test_task_questions_are_safe_for_braces():
    questions = task_questions(load_spec(), "Explain {x} in JSON: {\"a\": 1}")
    assert set(questions) == {"relevance", "coherence"}
    assert 'Explain {x} in JSON: {"a": 1}' in questions["relevance"].instructions[0]


def test_a_later_layer_reads_the_previous_answers_within_a_bounded_prompt():
    task = "Answer in one short sentence. What is the capital of France?"
    previous = ["Paris.", "The capital of France is Lyon.", "Paris.", "  ", "The capital is Paris, " + "very " * 200]
    prompt = layer_prompt(task, previous, max_chars=300)
    assert prompt.endswith(task)  # the task comes last: a small model follows what it read last
    shown = prompt.split("\n\n")[0].splitlines()[1:]
    assert shown[:2] == ["1. Paris.", "2. The capital of France is Lyon."]  # in order, each distinct answer once
    assert len(shown) == 3 and shown[2].startswith("3. The capital is Paris, very") and shown[2].endswith(" ...")
    assert sum(len(line) - 3 for line in shown) <= 300  # however long the answers, the shown part is bounded
    long = layer_prompt(task, [f"Answer {i} is " + "word " * 100 for i in range(16)], max_chars=300)
    assert len(long) < 300 + 16 * 4 + 200 + len(task)  # 16 answers share the same 300 characters
    assert layer_prompt(task, ["", " "], 300) == task  # nothing to read: the task alone
    # A later layer's expert may copy the list's numbering: dropped, so a cut-off answer is not trimmed to "1.".
    assert [without_list_marker(t) for t in ("1. Paris is the capital.", "2) Paris.", "- Paris.", "1.5 km.")] == \
        ["Paris is the capital.", "Paris.", "Paris.", "1.5 km."]


def test_the_last_layers_answers_are_the_candidates():
    answers = pd.DataFrame({"layer": [1, 1, 2, 2], "text": ["a", "b", "c", "d"]})
    assert last_layer(answers)["text"].tolist() == ["c", "d"]
    assert last_layer(answers.drop(columns="layer"))["text"].tolist() == ["a", "b", "c", "d"]  # older records


def test_starts_from_a_saved_population_or_an_evolution_runs_experts(tmp_path):
    config = tiny(tmp_path)
    fresh = prepare_tournament(config)
    assert len(fresh.experts) == 2 and all(e.value == 0 for e in fresh.experts)
    assert all(e.system_prompt in load_spec().personas for e in fresh.experts)
    # An evolution run's experts.parquet holds every generation: the last one is the population.
    rows = [Expert(i, "smollm2", SamplingSettings(), "sys", ["a"], value=float(g + i), picks=g).to_row() | {"generation": g}
            for g in range(3) for i in range(3)]
    pd.DataFrame(rows).to_parquet(tmp_path / "experts.parquet")
    experts = load_population(tmp_path / "experts.parquet")
    assert [e.value for e in experts] == [2.0, 3.0, 4.0]
    with pytest.raises(FileNotFoundError, match="population"):
        load_population(tmp_path / "missing.parquet")


@pytest.mark.slow
def test_tournament_flow_learns_values_and_the_next_ask_starts_from_them(prefect_server, backend, tmp_path):
    from flows.tournament import moe_tournament

    first = moe_tournament(tiny(tmp_path, external_reward=0.5))
    answers = pd.read_parquet(first["answers_path"])
    assert set(answers["iteration"]) == {0, 1}
    assert set(answers["expert_id"]) == {0, 1}  # every expert answered
    assert answers[["relevance", "coherence", "score"]].stack().between(0, 1).all()
    selected = answers[answers["selected"]]
    assert len(selected) == 2 and selected["reward"].ge(0.5).all()  # the external 0.5 is added to each label
    saved = pd.read_parquet(tmp_path / "population.parquet")
    assert saved["value"].abs().sum() > 0 and saved["picks"].sum() == 2
    assert first["values"] == {int(r.expert_id): round(r.value, 4) for r in saved.itertuples()}
    run = mlflow.get_run(first["mlflow_run_id"])
    assert {"reward", "total_reward", "expert/0/value"} <= set(run.data.metrics)

    # The second ask starts from the saved values (and keeps its own answers in its own run folder).
    second_config = tiny(tmp_path, run_name="second", max_iterations=1)
    assert [e.value for e in prepare_tournament(second_config).experts] == saved["value"].tolist()
    second = moe_tournament(second_config)
    assert second["iterations"] == 1 and second["run_dir"] != first["run_dir"]


@pytest.mark.slow
def test_tournament_waits_for_a_persons_reward_in_the_ui(prefect_server, backend, tmp_path):
    """The flow pauses for input; a person (here: a thread calling Prefect's API, as the UI's Resume form does)
    types a reward, which is added to the selected answer's reward. Without input it goes on after the timeout."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.flow_runs import resume_flow_run

    from flows.tournament import moe_tournament

    def answer_when_paused():
        with get_client(sync_client=True) as client:
            for _ in range(600):
                paused = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=["PAUSED"]))),
                    sort=FlowRunSort.START_TIME_DESC, limit=1)
                if paused:
                    resume_flow_run(paused[0].id, run_input={"reward": 2.5})
                    return
                time.sleep(0.5)

    # The thread runs in a copy of this context: Prefect's settings (the test server's URL) live in contextvars.
    person = threading.Thread(target=contextvars.copy_context().run, args=(answer_when_paused,), daemon=True)
    person.start()
    summary = moe_tournament(tiny(tmp_path, max_iterations=1, wait_for_reward_s=120))
    person.join(timeout=5)
    iterations = pd.read_parquet(f"{summary['run_dir']}/iterations.parquet")
    assert iterations["external_reward"].tolist() == [2.5]

    alone = moe_tournament(tiny(tmp_path, max_iterations=1, wait_for_reward_s=3, run_name="nobody"))
    iterations = pd.read_parquet(f"{alone['run_dir']}/iterations.parquet")
    assert iterations["external_reward"].isna().all()  # the timeout passed: no reward, and the run completed


@pytest.mark.slow
def test_ask_keeps_the_consensus_answer_by_default(prefect_server, backend, tmp_path):
    """The default selection end to end: the kept answer is the best-scored one of the largest cluster over all
    answers, and every expert that agreed with the selected answers gains value."""
    from flows.tournament import moe_tournament

    config = tiny(tmp_path, instruction="Answer in one short sentence. What is the capital of France?", context="",
                  experts=3, max_new_tokens=16, run_name="consensus")
    assert config.selection == "consensus" and config.value_signal == "agreement"
    summary = moe_tournament(config)
    answers = pd.read_parquet(summary["answers_path"])
    assert {"cluster", "agreement", "centrality", "kept"} <= set(answers.columns)
    assert answers["kept"].sum() == 1 and summary["selection"] == "consensus"
    kept = answers[answers["kept"]].iloc[0]
    assert summary["answer"] == kept["text"] and summary["reward_label"] in load_spec().reward_labels
    # Recomputed over every answer of the run, the kept one lies in the largest cluster and has its best score.
    from evoforge.judges.selection import Consensus

    final = Consensus(config.consensus_similarity, config.consensus_threshold).features(
        answers["text"].tolist(), summary["task"])
    largest = answers[final["cluster"].to_numpy() == 0]
    assert kept["text"] in largest["text"].tolist() and kept["score"] == largest["score"].max()
    # Each iteration's selected answer agrees with itself: its expert's value rose above zero.
    selected_experts = set(answers.loc[answers["selected"], "expert_id"])
    assert all(summary["values"][e] > 0 for e in selected_experts)


# Run in a child process: `ask`'s flow, with an injected fault that kills the process (SIGKILL: no cleanup, no
# exception handler) right after the first iteration is committed.
KILLED_AFTER_FIRST_ITERATION = """
import os, signal, sys
from evoforge.steps import tournament
from evoforge.core.config import TournamentConfig
from flows.tournament import moe_tournament

real_commit = tournament.commit_iteration

def commit_then_killed(state, outcome):
    real_commit(state, outcome)
    os.kill(os.getpid(), signal.SIGKILL)

tournament.commit_iteration = commit_then_killed
moe_tournament(TournamentConfig.model_validate_json(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_killed_ask_resumes_after_its_last_committed_iteration(prefect_server, backend, tmp_path):
    """`ask` commits each iteration (answers part, then the progress file): killed after iteration 0, the same
    run_name resumes at iteration 1 with the experts as iteration 0 left them, keeps iteration 0's answers as they
    were, and logs to the same MLflow run, each iteration once. Another task under that run_name is refused."""
    from conftest import run_killed_child
    from evoforge.core.tracking import tracking_uri
    from flows.tournament import moe_tournament

    config = tiny(tmp_path, run_name="killed", max_iterations=2, external_reward=0.5)
    run_killed_child(KILLED_AFTER_FIRST_ITERATION, config.model_dump_json())

    run_dir = tmp_path / "runs" / "killed"
    progress = json.loads((run_dir / "progress.json").read_text())
    assert [r["iteration"] for r in progress["iterations"]] == [0]
    first = pd.read_parquet(run_dir / "iterations" / "answers-0000.parquet")
    resumed_experts = prepare_tournament(config).experts
    assert [e.value for e in resumed_experts] == [row["value"] for row in progress["experts"]]
    assert sum(e.picks for e in resumed_experts) == 1  # iteration 0's pick survived the kill

    summary = moe_tournament(config)
    assert summary["iterations"] == 2 and summary["mlflow_run_id"] == progress["mlflow_run_id"]
    answers = pd.read_parquet(summary["answers_path"])
    assert sorted(answers["iteration"].unique()) == [0, 1]
    assert answers[answers["iteration"] == 0]["text"].tolist() == first["text"].tolist()  # not redone
    client = mlflow.tracking.MlflowClient(tracking_uri())
    assert client.get_run(summary["mlflow_run_id"]).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "reward")] == [0, 1]

    with pytest.raises(ValueError, match="run_name: 'killed'.*another task"):
        prepare_tournament(tiny(tmp_path, run_name="killed", instruction="Name three colours."))


@pytest.mark.slow
def test_ask_with_two_layers_refines_the_first_layers_answers(prefect_server, backend, tmp_path):
    """`ask --layers 2`: layer 2's experts read layer 1's answers; both layers are recorded (answers-NNNN.parquet,
    answers.parquet, with `layer`), only layer 2's answers are selected from, and MLflow has metrics per layer."""
    from app.cli import main
    from evoforge.core.tracking import tracking_uri

    args = ["ask", "Answer in one short sentence. What is the capital of France?", "--experts", "2",
            "--max-new-tokens", "12", "--min-iterations", "1", "--max-iterations", "1", "--layers", "2",
            "--out", str(tmp_path / "runs"), "--run-name", "layered", "--population-file",
            str(tmp_path / "population.parquet")]
    assert main(args) == 0
    run_dir = tmp_path / "runs" / "layered"
    part = pd.read_parquet(run_dir / "iterations" / "answers-0000.parquet")
    assert part.groupby("layer")["expert_id"].apply(sorted).to_dict() == {1: [0, 1], 2: [0, 1]}
    assert part["score"].notna().all() and (part["new_tokens"] > 0).all()  # every layer judged, tokens counted
    answers = pd.read_parquet(run_dir / "answers.parquet")
    assert answers["kept"].sum() == 1 and answers.loc[answers["kept"], "layer"].item() == 2
    assert answers.loc[answers["selected"].fillna(False).astype(bool), "layer"].tolist() == [2]
    progress = json.loads((run_dir / "progress.json").read_text())
    client = mlflow.tracking.MlflowClient(tracking_uri())
    metrics = client.get_run(progress["mlflow_run_id"]).data.metrics
    assert {"layer/1/mean_score", "layer/2/mean_score", "layer/1/new_tokens", "layer/2/agreement"} <= set(metrics)
    assert metrics["new_tokens"] == metrics["layer/1/new_tokens"] + metrics["layer/2/new_tokens"]
    assert json.loads((run_dir / "config.json").read_text())["layers"] == 2
