"""`ask` with a search strategy, end to end on the embedded model: every expert's answer is searched (tot, valued
by the judges' panel), all experts' searches batched together, and the answers record what their search cost."""

import pandas as pd
import pytest

from evoforge.core.config import TournamentConfig, TreeConfig


@pytest.mark.slow
def test_ask_writes_each_experts_answer_with_tree_of_thought(prefect_server, backend, tmp_path):
    from flows.tournament import moe_tournament

    config = TournamentConfig(
        instruction="Answer in one short sentence. What is the capital of France?", experts=2, max_new_tokens=12,
        continue_tokens=4, min_iterations=1, max_iterations=1, out=str(tmp_path / "runs"),
        population_file=str(tmp_path / "population.parquet"), strategy="tot",
        tree=TreeConfig(k=2, width=1, max_steps=2, sentence_tokens=12), run_name="tot")
    summary = moe_tournament(config)
    answers = pd.read_parquet(summary["answers_path"])
    assert len(answers) == 2 and (answers["strategy"] == "tot").all()
    # Each search expanded (one call) and valued its k sentences with the panel (one call) at least once.
    assert (answers["model_calls"] >= 2).all() and answers["strategy_score"].between(0, 1).all()
    assert (answers["text"].str.len() > 0).all() and summary["answer"] in answers["text"].tolist()
    assert (answers["new_tokens"] > 0).all()


@pytest.mark.slow
def test_ask_with_a_token_ensemble_keeps_the_one_answer_its_experts_wrote_together(prefect_server, backend, tmp_path):
    from flows.tournament import moe_tournament

    config = TournamentConfig(
        instruction="Answer in one short sentence. What is the capital of France?", experts=2, max_new_tokens=12,
        continue_tokens=4, min_iterations=1, max_iterations=1, out=str(tmp_path / "runs"),
        population_file=str(tmp_path / "population.parquet"), ensemble="tokens", run_name="tokens")
    summary = moe_tournament(config)
    answers = pd.read_parquet(summary["answers_path"])
    assert len(answers) == 2 and (answers["ensemble"] == "tokens").all()
    assert answers["text"].nunique() == 1 and summary["answer"] == answers["text"].iloc[0]
    assert answers["new_tokens"].between(1, 12).all()


@pytest.mark.slow
def test_ask_with_a_token_ensemble_writes_one_answer_per_task_for_all_its_experts(backend):
    import numpy as np

    from evoforge.core.experts import random_experts
    from evoforge.steps.ask_search import ensembled_answers
    from evoforge.steps.tournament import load_spec

    config = TournamentConfig(instruction="x", experts=3, max_new_tokens=10, ensemble="tokens")
    spec = load_spec()
    experts = random_experts(3, config.generator_models, config.sampling_ranges(), spec.personas, spec.personas,
                             np.random.default_rng(0), shots=0)
    tasks = ["Answer in one short sentence. What is the capital of Italy?", "Name one primary colour."]
    jobs = [(e.expert_id, t) for t in tasks for e in experts]
    answers = ensembled_answers({"smollm2": backend}, experts, jobs, seed=0, max_new_tokens=10)
    assert answers["job"].tolist() == list(range(6)) and answers["expert_id"].tolist() == [0, 1, 2] * 2
    assert answers.groupby(answers["job"] // 3)["text"].nunique().tolist() == [1, 1]  # one answer per task
    assert (answers["new_tokens"].between(1, 10)).all() and answers["text"].str.len().min() > 0
    assert (answers["ensemble"] == "tokens").all()


def test_a_token_ensemble_does_not_combine_with_a_search_strategy():
    with pytest.raises(ValueError, match="ensemble: 'tokens' .* strategy 'tot'"):
        TournamentConfig(instruction="x", ensemble="tokens", strategy="tot")


def test_ask_picks_its_answer_writer_from_strategy_and_ensemble():
    from evoforge.steps.ask_search import answer_writer, ensembled_answers, searched_answers

    assert answer_writer(TournamentConfig(instruction="x")) is None  # one sample per expert, as before
    beam = answer_writer(TournamentConfig(instruction="x", strategy="beam"), panel=None)
    assert beam.func is searched_answers and beam.keywords["strategy"] == "beam"
    tokens = answer_writer(TournamentConfig(instruction="x", ensemble="tokens", max_new_tokens=40))
    assert tokens.func is ensembled_answers and tokens.keywords == {"max_new_tokens": 40}
