"""Search agents through the real evolution flow (Prefect, MLflow, embedded models, Parquet): each strategy
writes a tiny run, valued (tot, mcts) by a value model trained on the checked-in run tests/data/opinions-s0-run."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

TEST_RUN = Path(__file__).resolve().parents[1] / "data" / "opinions-s0-run"
TINY = dict(generations=2, experts=2, batch_size=2, max_new_tokens=16, continue_tokens=8, seed=5,
            heldout_judge=False, tree=dict(width=2, k=2, iterations=2, sentence_tokens=8, max_steps=2))


def test_strategy_config_is_checked():
    assert RunConfig().strategy == "sample" and not RunConfig().manager.enabled  # today's run by default
    with pytest.raises(ValidationError) as bad:
        RunConfig(strategy="greedy")
    assert bad.value.error_count() == 1 and bad.value.errors()[0]["loc"] == ("strategy",)
    assert "'sample', 'beam', 'tot' or 'mcts'" in str(bad.value)
    with pytest.raises(ValidationError, match="strategy: search strategies and the manager run in single"):
        RunConfig(strategy="beam", islands=2)
    with pytest.raises(ValidationError, match="strategy: screening and a search strategy"):
        RunConfig(strategy="tot", screen=2)
    with pytest.raises(ValidationError, match="manager.strategies"):
        RunConfig(manager=dict(enabled=True, strategies=["sample", "greedy"]))


def test_a_value_model_that_cannot_be_loaded_is_refused_before_the_run(tmp_path, capsys):
    from app.cli import main

    (tmp_path / "not-a-model.joblib").write_text("plain text")
    for path in (tmp_path / "missing.joblib", tmp_path / "not-a-model.joblib"):
        assert main(["run", "--strategy", "tot", "--value-model", str(path), "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"evoforge: value_model: cannot load '{path}'") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["not-a-model.joblib"]


@pytest.fixture(scope="module")
def world_model(embedder, tmp_path_factory):
    from evoforge.steps.world_model import fit_world_model, save_world_model

    return str(save_world_model(fit_world_model([TEST_RUN], embedder), tmp_path_factory.mktemp("world") / "vm.joblib"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["beam", "tot", "mcts"])
def test_a_run_writes_with_its_strategy(strategy, prefect_server, backend, world_model, tmp_path):
    from flows.evolution import evolution_run

    summary = evolution_run(RunConfig(**TINY, strategy=strategy, value_model=world_model, out=str(tmp_path),
                                      run_name=strategy))
    candidates = pd.read_parquet(tmp_path / strategy / "candidates.parquet")
    assert len(candidates) == 4 and (candidates["strategy"] == strategy).all()
    assert (candidates["model_calls"] >= 2).all()  # a search, not one sample: at least two expansion steps
    valid = candidates[candidates["valid"]]
    assert len(valid) and valid["quality"].notna().all()  # judged like any candidate
    if strategy == "beam":  # ranked by the model's own log-probability per token; no value model is loaded
        assert (valid["strategy_score"] < 0).all() and valid["value_pred"].isna().all()
    else:  # valued by the model trained on another run, so from the first generation on
        assert valid["value_pred"].between(0, 1).all() and valid["value_quality"].notna().all()
        assert valid["strategy_score"].between(0, 1).all()  # the P(insert) of the text it kept
    client = MlflowClient(tracking_uri())
    history = client.get_metric_history(summary["mlflow_run_id"], f"strategy/{strategy}/candidates")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 2.0)]


@pytest.mark.slow
def test_the_manager_picks_and_is_credited(prefect_server, backend, world_model, tmp_path):
    from flows.evolution import evolution_run

    config = RunConfig(**TINY, value_model=world_model, out=str(tmp_path), run_name="manager",
                       manager=dict(enabled=True, strategies=["sample", "tot"]))
    summary = evolution_run(config)
    candidates = pd.read_parquet(tmp_path / "manager" / "candidates.parquet")
    arms = candidates["manager_arm"].str.split("/", expand=True)
    assert (arms[0] == candidates["strategy"]).all()  # the picked strategy wrote it
    assert (arms[1].astype(int) == candidates["expert_id"]).all()  # and the picked expert
    assert candidates["manager_niche"].between(0, 19).all()  # a cell of opinions' 20-bin grid
    assert candidates["manager_reward"].notna().all()
    entered = candidates[candidates["inserted"]]
    assert (candidates.loc[~candidates["inserted"], "manager_reward"] == 0).all()
    assert (entered["manager_reward"] > 0).all() and (entered["manager_reward"] <= entered["quality"]).all()
    client = MlflowClient(tracking_uri())
    rewards = client.get_metric_history(summary["mlflow_run_id"], "manager/reward")
    assert [m.step for m in rewards] == [0, 1]
    assert rewards[0].value == pytest.approx(candidates.loc[candidates["generation"] == 0, "manager_reward"].sum())


def test_train_world_fits_logs_and_registers_the_value_model(prefect_server, tmp_path, capsys):
    from app.cli import main
    from evoforge.steps.agents import load_world_model

    out = tmp_path / "vm.joblib"
    assert main(["train-world", "--runs", str(TEST_RUN), "--out", str(out), "--register-as", "vm-test"]) == 0
    model = load_world_model(str(out))
    judged = pd.read_parquet(TEST_RUN / "candidates")
    assert model.rows == int((judged["valid"] & judged["quality"].notna()).sum())  # every judged candidate
    assert model.targets == ["quality", "measure_sentiment"]
    client = MlflowClient(tracking_uri())
    version = max(client.search_model_versions("name='vm-test'"), key=lambda v: int(v.version))
    run = client.get_run(version.run_id)
    assert run.data.metrics["value/mae_measure_sentiment"] < run.data.metrics["value/mae_measure_sentiment_baseline"]
    registered = load_world_model(f"models:/vm-test/{version.version}")
    x = np.random.default_rng(0).normal(size=(3, 384 + 5))
    np.testing.assert_allclose(registered.predict(x)["quality"], model.predict(x)["quality"])
    capsys.readouterr()
    assert main(["train-world", "--runs", str(tmp_path)]) == 2  # not a run folder: one clear line, no flow
    assert capsys.readouterr().err.startswith(f"evoforge: --runs {tmp_path}: not a run folder")


@pytest.mark.slow
def test_train_agent_then_test_agent_against_sampling(prefect_server, backend, tmp_path, capsys):
    import json

    from app.cli import main

    config = tmp_path / "agent.json"
    config.write_text(json.dumps({**TINY, "out": str(tmp_path / "runs"), "run_name": "agent"}))
    assert main(["train-agent", "--config", str(config), "--strategies", "sample", "beam", "--policy", "thompson"]) == 0
    agent = tmp_path / "runs" / "agent"
    trained = pd.read_parquet(agent / "candidates.parquet")
    assert set(trained["strategy"]) <= {"sample", "beam"} and trained["manager_reward"].notna().all()
    assert json.loads((agent / "config.json").read_text())["manager"]["policy"] == "thompson"

    assert main(["test-agent", "--agent", str(agent), "--generations", "1", "--out", str(tmp_path / "test")]) == 0
    rows = pd.read_parquet(tmp_path / "test" / "test_agent.parquet")
    assert rows["arm"].tolist() == ["agent", "sample"]
    # Each arm judges its 2 texts, each 2 chat judges x 2 questions + the embedding judge x 1 axis.
    assert rows["judge_calls"].between(1, 2 * (2 * 2 + 1)).all()
    warm = pd.read_parquet(Path(rows["run_dir"].iloc[0]) / "candidates.parquet")
    plain = pd.read_parquet(Path(rows["run_dir"].iloc[1]) / "candidates.parquet")
    assert warm["manager_arm"].notna().all() and "manager_arm" not in plain and "strategy" not in plain
    assert "| agent | 0 |" in capsys.readouterr().out


@pytest.mark.slow
def test_the_manager_offers_tot_only_once_a_value_model_exists(prefect_server, backend, tmp_path):
    from flows.evolution import evolution_run

    # No value_model and fewer than 8 judged candidates in both generations: the run's own model cannot be fitted.
    config = RunConfig(**TINY, out=str(tmp_path), run_name="waiting", manager=dict(enabled=True))
    evolution_run(config)
    candidates = pd.read_parquet(tmp_path / "waiting" / "candidates.parquet")
    assert candidates["manager_arm"].str.startswith("sample/").all() and (candidates["strategy"] == "sample").all()
    assert candidates["value_pred"].isna().all()
