"""Evolving arrangements end to end: a tiny real `evolution_run` whose experts are culled and bred."""

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

pytestmark = pytest.mark.slow


def test_an_evolving_run_records_lineage_metrics_and_the_lineage_plot(prefect_server, backend, tmp_path):
    from flows.evolution import evolution_run

    config = RunConfig(generations=2, experts=3, batch_size=4, max_new_tokens=16, continue_tokens=8, seed=3,
                       judge_references=False, heldout_judge=False, out=str(tmp_path), run_name="arranged",
                       arrangements=dict(evolve=True, cull_every=1, cull=1, window=1, crossover_rate=0.5))
    summary = evolution_run(config)
    rows = pd.read_parquet(tmp_path / "arranged" / "experts.parquet")
    assert {"parent_ids", "born", "culled"} <= set(rows.columns)
    # A cull after each generation: one culled row per generation, the population stays at 3 living experts.
    assert rows.groupby("generation")["culled"].count().tolist() == [1, 1]
    assert (rows[rows["culled"].isna()].groupby("generation").size() == 3).all()
    children = rows[rows["parent_ids"].map(len) > 0].drop_duplicates("expert_id")
    assert sorted(children["expert_id"]) == [3, 4] and sorted(children["born"]) == [1, 2]
    for child in children.itertuples():  # its parents lived, not culled, in the generation it was made after
        made_after = rows[(rows["generation"] == child.born - 1) & rows["expert_id"].isin(list(child.parent_ids))]
        assert len(made_after) == len(child.parent_ids) and made_after["culled"].isna().all()
        assert not set(child.parent_ids) & set(rows.loc[rows["culled"] == child.born - 1, "expert_id"])
    # Generation 1 was written by the population after the first cull (ids name experts in the candidates too).
    candidates = pd.read_parquet(tmp_path / "arranged" / "candidates.parquet")
    assert set(candidates.loc[candidates["generation"] == 1, "expert_id"]) <= set(
        rows.loc[(rows["generation"] == 0) & rows["culled"].isna(), "expert_id"])

    client = MlflowClient(tracking_uri())
    run_id = summary["mlflow_run_id"]
    assert sorted(m.step for m in client.get_metric_history(run_id, "arrangements/culled")) == [0, 1]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["arrangements/culled"] == 1 and "arrangements/std_temperature" in metrics
    assert "plots/lineage.png" in {f.path for f in client.list_artifacts(run_id, "plots")}
    assert (tmp_path / "arranged" / "plots" / "lineage.png").stat().st_size > 10_000
