"""Screening by the value model through the real evolution flow (Prefect, MLflow, embedded models, Parquet)."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

TINY = dict(generations=3, experts=2, batch_size=4, max_new_tokens=16, continue_tokens=8, seed=3)


def test_screen_config_is_checked():
    with pytest.raises(ValueError, match="screen_explore"):
        RunConfig(screen=2, screen_explore=1.5)
    assert RunConfig().screen == 0  # off by default: today's run


@pytest.mark.slow
def test_screened_run_judges_a_batch_and_keeps_the_rest(prefect_server, backend, tmp_path):
    from flows.evolution import evolution_run

    summary = evolution_run(RunConfig(**TINY, screen=3, screen_explore=0.25, out=str(tmp_path), run_name="screen"))
    candidates = pd.read_parquet(tmp_path / "screen" / "candidates.parquet")
    per_generation = candidates.groupby("generation").size().tolist()
    # Generations 0 and 1 judge 4 each (8 rows: enough to fit); generation 2 writes 3 x 4 and judges 4 of them.
    assert per_generation == [4, 4, 12]
    last = candidates[candidates["generation"] == 2]
    assert last["judged"].sum() <= 4 and last["quality"].notna().sum() == last["judged"].sum()
    assert set(last["screen"]) <= {"ranked", "explore", "out", "invalid"}
    assert (last["screen"] == "explore").sum() == 1  # round(0.25 x 4)
    out = last[last["screen"] == "out"]
    assert len(out) >= 8 - (last["screen"] == "invalid").sum() and not out["inserted"].any()
    assert out["value_pred"].notna().all() and out["quality"].isna().all()
    ranked = last[last["screen"] == "ranked"]
    assert ranked["value_pred"].min() >= out["value_pred"].max()  # the model's best were judged
    early = candidates[candidates["generation"] < 2]
    assert set(early["screen"]) <= {"no_model", "invalid"} and early["value_pred"].isna().all()

    client = MlflowClient(tracking_uri())
    run_id = summary["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "value/rows")] == [0, 1, 2]
    assert client.get_metric_history(run_id, "value/screened_out")[-1].value == len(out)
    assert [m.step for m in client.get_metric_history(run_id, "value/mae_quality")] == [2]
    judge_calls = {m.step: m.value for m in client.get_metric_history(run_id, "judge_calls")}
    # judged texts x (2 chat judges x 2 questions + the embedding judge x 1 axis)
    assert judge_calls[2] == last["quality"].notna().sum() * (2 * 2 + 1)
