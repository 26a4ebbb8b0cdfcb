"""Budgets stop a run at a generation boundary and a larger budget resumes it; transient backend faults and a
hung call are retried, and the run's archive is the fault-free run's."""

import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.budget import BudgetConfig, exhausted, spent
from evoforge.core.config import RunConfig
from evoforge.core.tracking import tracking_uri

TINY = dict(generations=3, experts=2, batch_size=4, max_new_tokens=16, continue_tokens=8, seed=5,
            judge_references=False)


def test_budgets_count_what_committed_generations_spent():
    history = [{"tokens_generated": 60, "judge_calls": 16, "seconds_total": 3.0, "seconds_judge": 1.0},
               {"tokens_generated": 50, "judge_calls": 16, "seconds_total": 2.5}]  # an entry may lack a stage
    assert spent(history)["max_tokens"] == 110 and spent(history)["max_seconds_judge"] == 1.0
    assert exhausted(BudgetConfig(), history) is None
    assert exhausted(BudgetConfig(max_tokens=111), history) is None
    assert exhausted(BudgetConfig(max_tokens=110), history) == "max_tokens: 110 of 110"
    assert exhausted(BudgetConfig(max_tokens=10**6, max_judge_calls=32), history) == "max_judge_calls: 32 of 32"
    assert exhausted(BudgetConfig(max_seconds=5), history).startswith("max_seconds: 6 of 5")
    assert exhausted(BudgetConfig(max_tokens=1), []) is None  # a fresh run always starts
    with pytest.raises(ValueError):
        BudgetConfig(max_tokens=0)


@pytest.mark.slow
def test_a_spent_budget_stops_the_run_and_a_larger_one_resumes_it(prefect_server, backend, tmp_path):
    from flows.evolution import evolution_run

    config = RunConfig(**TINY, out=str(tmp_path), run_name="budget", budget={"max_tokens": 1})
    state = evolution_run(config, return_state=True)
    summary = state.result()
    assert summary["generations"] == 1 and summary["stopped_by"].startswith("max_tokens: ")
    assert state.is_completed() and "stopped by budget max_tokens" in state.message  # what the Prefect UI shows
    run = MlflowClient(tracking_uri()).get_run(summary["mlflow_run_id"])
    assert run.data.tags["stopped_by"] == summary["stopped_by"]
    first = pd.read_parquet(tmp_path / "budget" / "candidates" / "gen_0000.parquet")

    larger = config.model_copy(update={"budget": BudgetConfig(max_tokens=10**6)})
    resumed = evolution_run(larger)
    assert resumed["generations"] == 3 and "stopped_by" not in resumed
    assert resumed["mlflow_run_id"] == summary["mlflow_run_id"]
    assert pd.read_parquet(tmp_path / "budget" / "candidates" / "gen_0000.parquet").equals(first)


class FlakyBackend:
    """Injected faults: every 5th model call (20%) raises, and the first judge call hangs until stopped (the
    test's timeout, 90 s, is 10-30x a normal step here: room for a slow machine)."""

    def __init__(self, real):
        self.real, self.calls, self.hung = real, 0, False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def _call(self, method, *args, **kwargs):
        self.calls += 1
        if self.calls % 5 == 0:
            raise ConnectionError("injected transient backend fault")
        return getattr(self.real, method)(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self._call("generate", *args, **kwargs)

    def option_logprobs(self, *args, **kwargs):
        if not self.hung:
            self.hung = True
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # a hung call: only the task's timeout ends it
                time.sleep(0.1)
        return self._call("option_logprobs", *args, **kwargs)


@pytest.mark.slow
def test_faults_and_a_hung_call_are_retried_and_change_nothing(prefect_server, backend, tmp_path, monkeypatch):
    import flows.evolution as flows_module

    clean = flows_module.evolution_run(RunConfig(**TINY, out=str(tmp_path), run_name="clean"))
    flaky = FlakyBackend(backend)
    monkeypatch.setattr(flows_module, "load_backend", lambda name, *placement: flaky)
    faulty = flows_module.evolution_run(RunConfig(**TINY, out=str(tmp_path), run_name="faulty", task_timeout_s=90))
    assert flaky.hung and flaky.calls >= 10  # the hang and at least two faults happened
    assert faulty["generations"] == clean["generations"] == 3
    columns = ["cell", "cid", "text", "quality"]
    archive = pd.read_parquet(tmp_path / "faulty" / "archive.parquet")[columns]
    assert archive.equals(pd.read_parquet(tmp_path / "clean" / "archive.parquet")[columns])
