"""The router through the real flows (Prefect, MLflow, the embedded models, Parquet): a tiny run whose router picks
an expert per target niche and is credited with archive improvement, and a routed ask that records credit."""

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

TINY = dict(generations=2, experts=3, batch_size=4, max_new_tokens=16, continue_tokens=8, seed=3,
            heldout_judge=False, gating={"policy": "router"})


@pytest.mark.slow
def test_a_routed_run_picks_per_niche_and_is_credited(prefect_server, backend, tmp_path):
    from evoforge.steps.agents import steer
    from evoforge.steps.evolution import prepare_run
    from flows.evolution import evolution_run

    config = RunConfig(**TINY, out=str(tmp_path), run_name="routed")
    summary = evolution_run(config)
    candidates = pd.read_parquet(tmp_path / "routed" / "candidates.parquet")
    assert len(candidates) == 8 and (candidates["router_expert"] == candidates["expert_id"]).all()
    assert candidates["router_niche"].between(0, 19).all() and (candidates["mutation"] == "target").all()
    assert candidates["router_reward"].notna().all() and candidates["router_score"].notna().all()
    assert (candidates.loc[~candidates["inserted"], "router_reward"] == 0).all()
    entered = candidates[candidates["inserted"]]
    assert len(entered) and (entered["router_reward"] > 0).all()
    assert (entered["router_reward"] <= entered["quality"] + 1e-9).all()
    client = MlflowClient(tracking_uri())
    entropy = client.get_metric_history(summary["mlflow_run_id"], "router/entropy")
    assert [m.step for m in entropy] == [0, 1] and all(0 <= m.value <= 1 for m in entropy)
    reward = client.get_metric_history(summary["mlflow_run_id"], "router/reward")
    first = candidates[candidates["generation"] == 0]
    assert reward[0].value == pytest.approx(first["router_reward"].mean())
    # The record is the router's state: rebuilt after generation 0, it holds generation 0's credited picks,
    # as a run resumed there would.
    state = prepare_run(config)
    router = steer(state, 1, None).router
    assert sorted(router.experts.tolist()) == sorted(first["router_expert"].tolist())
    assert sorted(router.rewards.tolist()) == pytest.approx(sorted(first["router_reward"].tolist()))


@pytest.mark.slow
def test_a_routed_ask_records_credit_and_the_next_ask_routes_by_it(prefect_server, backend, tmp_path):
    from evoforge.core.config import TournamentConfig
    from evoforge.steps.ask_routing import credit_path, embed_task, read_credit
    from evoforge.steps.tournament import answer_step, prepare_tournament
    from flows.tournament import moe_tournament

    config = dict(instruction="What is the capital of France?", experts=3, answering=2, max_new_tokens=12,
                  continue_tokens=4, min_iterations=1, max_iterations=1, out=str(tmp_path / "runs"),
                  population_file=str(tmp_path / "population.parquet"), routing="router")
    first = moe_tournament(TournamentConfig(**config))
    credit = read_credit(credit_path(config["population_file"]))
    answered = pd.read_parquet(first["answers_path"])
    assert sorted(credit["expert_id"]) == sorted(answered["expert_id"]) and len(credit) == 2
    assert credit["credit"].between(0, 1).all() and credit["credit"].max() == 1.0  # the kept answer agrees with itself
    assert np.allclose(credit["embedding"].iloc[0], embed_task(first["task"]), atol=1e-5)
    # A similar task next: with no exploration, the two experts with the most credit answer it.
    state = prepare_tournament(TournamentConfig(**{**config, "instruction": "What is the capital of Italy?",
                                                   "values": {"epsilon_start": 0.0, "epsilon_min": 0.0}}))
    best = credit.sort_values(["credit", "expert_id"], ascending=[False, True])["expert_id"].iloc[0]
    assert best in set(answer_step(state, 0, {"smollm2": backend})["expert_id"])
