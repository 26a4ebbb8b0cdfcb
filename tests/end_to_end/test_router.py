"""The router through the real evolution flow (Prefect, MLflow, the embedded models, Parquet): a tiny run whose
router picks an expert per target niche and is credited with archive improvement."""

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
