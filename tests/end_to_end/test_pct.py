"""`search: pct` end to end: a tiny evolution run whose attempts record their aim, error and gain, whose loop state
the run folder alone rebuilds, and whose loop metrics reach MLflow."""

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.domain import load_domain
from evoforge.core.tracking import tracking_uri
from evoforge.search.control import Controller

pytestmark = pytest.mark.slow


def test_a_pct_run_records_its_loop_and_acts_on_the_record(prefect_server, backend, tmp_path):
    from flows.evolution import evolution_run

    config = RunConfig(generations=2, experts=2, batch_size=4, max_new_tokens=24, continue_tokens=8, seed=3,
                       search="pct", judge_references=False, heldout_judge=False, out=str(tmp_path), run_name="pct")
    summary = evolution_run(config)
    run = tmp_path / "pct"
    candidates = pd.read_parquet(run / "candidates.parquet")
    assert set(candidates["mutation"]) == {"pct"} and len(candidates) == 8
    first, second = candidates[candidates["generation"] == 0], candidates[candidates["generation"] == 1]
    # Nothing perceived yet (the error is null, NaN written to Parquet): aim at the reference.
    assert all(np.isnan(np.array(list(e), dtype=float)).all() for e in first["pct_error"])
    assert all(list(a) == [t[0] + 0.5] for a, t in zip(first["pct_aim"], first["pct_target"]))
    assert all(list(g) == [1.0] for g in first["pct_gain"])  # gains start at 1

    # The record of generation 0 alone gives the loop state generation 1 acted on (what a resumed run rebuilds).
    domain = load_domain("opinions")
    controller = Controller.from_record(domain, pd.read_parquet(run / "candidates" / "gen_0000.parquet"))
    for _, row in second.iterrows():
        aim, err, _ = controller.aim_for(tuple(row["pct_target"]))
        assert np.allclose(row["pct_aim"], aim) and np.allclose(np.array(list(row["pct_error"]), dtype=float), err, equal_nan=True)
        assert np.allclose(row["pct_gain"], controller.gain)

    history = MlflowClient(tracking_uri()).get_metric_history(summary["mlflow_run_id"], "pct/hit_rate")
    assert sorted(m.step for m in history) == [0, 1] and all(0 <= m.value <= 1 for m in history)
