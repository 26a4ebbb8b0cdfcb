"""End to end: the real `evolution_run` flow on a real Prefect server, real MLflow store, real models, real Parquet."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import RunConfig
from evoforge.core.domain import DOMAINS_DIR
from evoforge.core.tracking import tracking_uri

pytestmark = pytest.mark.slow

TINY = dict(generations=2, experts=2, batch_size=4, max_new_tokens=16, continue_tokens=8, seed=3)
PER_GENERATION = ["qd_score", "coverage", "max_quality", "mean_quality", "num_elites", "candidates", "inserted",
                  "tokens_generated", "seconds_generate", "seconds_judge", "seconds_archive", "elite_diversity",
                  "judge_calls", "flagged", "heldout/agreement", "heldout/same_cell"]


class FaultyJudgeBackend:
    """Injected fault: the real backend, except that judging raises after `ok_calls` scoring calls."""

    def __init__(self, real, ok_calls):
        self.real, self.ok_calls, self.calls = real, ok_calls, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def option_logprobs(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.ok_calls:
            raise RuntimeError("injected judge fault")
        return self.real.option_logprobs(*args, **kwargs)


def metric_steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_evolution_run_end_to_end(prefect_server, backend, tmp_path):
    from flows.evolution import evolution_run

    config = RunConfig(**TINY, out=str(tmp_path), run_name="e2e")
    summary = evolution_run(config)
    run_dir = tmp_path / "e2e"

    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    assert len(candidates) == 8 and sorted(candidates["generation"].unique()) == [0, 1]
    assert candidates["cid"].is_unique
    for column in ["text", "expert_id", "genotype", "generation", "quality", "measure_sentiment", "inserted",
                   "judge_chat0_quality", "judge_chat1_quality", "judge_chat0_sentiment", "judge_chat1_sentiment",
                   "judge_emb_sentiment"]:  # the default panel: two chat judges, and MiniLM's poles for measures
        assert column in candidates.columns, column
    assert "judge_emb_quality" not in candidates.columns
    assert all(len(g) == 3 for g in candidates["genotype"])
    valid = candidates[candidates["valid"]]
    assert valid["quality"].between(0, 1).all() and valid["measure_sentiment"].between(0, 1).all()
    assert candidates["inserted"].any()

    final = pd.read_parquet(run_dir / "archive" / "gen_0001.parquet")
    assert set(final["cid"]) <= set(candidates.loc[candidates["inserted"], "cid"])
    assert summary["qd_score"] == pytest.approx(final["quality"].sum())
    experts = pd.read_parquet(run_dir / "experts.parquet")
    assert len(experts) == 4 and experts.groupby("generation")["picks"].sum().tolist() == [2, 4]

    client = MlflowClient(tracking_uri())
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["generations"] == "2" and run.data.params["domain"] == "opinions"
    assert run.data.tags["prefect_flow_run_id"]
    for key in PER_GENERATION:
        assert metric_steps(client, run.info.run_id, key) == [0, 1], key
    assert run.data.metrics["qd_score"] == pytest.approx(summary["qd_score"])
    assert any(k.startswith("expert/") and k.endswith("/value") for k in run.data.metrics)
    assert any(k.startswith("judge/chat0/sentiment/") for k in run.data.metrics)
    artifacts = {f.path for d in ("plots", "data") for f in client.list_artifacts(run.info.run_id, d)}
    assert {"plots/archive_heatmap.png", "data/candidates.parquet", "data/archive.parquet"} <= artifacts
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["generation-0000", "generation-0001"]
    assert all("qd_score" in c.data.metrics and c.info.status == "FINISHED" for c in children)
    # The judges were measured on the domain's reference labels first.
    assert 0.5 < run.data.metrics["ref/sentiment/chat0/auc_raw"] <= 1
    assert "ref/sentiment/combine-stacking/accuracy" in run.data.metrics
    assert [f.path for f in client.list_artifacts(run.info.run_id, "judges")] == ["judges/judges.parquet"]


def test_interrupted_run_resumes_from_its_last_completed_generation(prefect_server, backend, tmp_path, monkeypatch):
    import flows.evolution as flows_module

    config = RunConfig(**TINY, out=str(tmp_path), run_name="crash", judge_references=False, heldout_judge=False,
                       task_retries=0)
    # Judging asks 2 judges x 2 questions = 4 scoring calls per generation: generation 1's first one fails (and,
    # with no retries, fails the run; nothing else scores: no references, no held-out judge).
    faulty = FaultyJudgeBackend(backend, ok_calls=4)
    monkeypatch.setattr(flows_module, "load_backend", lambda name, *placement: faulty)
    with pytest.raises(RuntimeError, match="injected judge fault"):
        flows_module.evolution_run(config)
    state = json.loads((tmp_path / "crash" / "state.json").read_text())
    assert state["completed"] == 1
    first = pd.read_parquet(tmp_path / "crash" / "candidates" / "gen_0000.parquet")
    client = MlflowClient(tracking_uri())
    assert client.get_run(state["mlflow_run_id"]).info.status == "FAILED"

    monkeypatch.undo()
    summary = flows_module.evolution_run(config)
    assert summary["mlflow_run_id"] == state["mlflow_run_id"] and summary["generations"] == 2
    assert pd.read_parquet(tmp_path / "crash" / "candidates" / "gen_0000.parquet").equals(first)  # not redone
    assert metric_steps(client, summary["mlflow_run_id"], "qd_score") == [0, 1]
    assert client.get_run(summary["mlflow_run_id"]).info.status == "FINISHED"
    assert len(pd.read_parquet(tmp_path / "crash" / "candidates.parquet")) == 8


def test_a_crash_between_commit_and_logging_logs_the_generation_when_the_run_resumes(prefect_server, backend,
                                                                                     tmp_path, monkeypatch):
    """The run folder is the record, MLflow its projection: a run killed after committing a generation but before
    logging it does not redo it on resume; it logs it, once, and replaces the half-made child run."""
    import flows.evolution as flows_module
    from evoforge.core.tracking import Tracker

    config = RunConfig(**TINY, out=str(tmp_path), run_name="half-logged", judge_references=False,
                       heldout_judge=False, task_retries=0)
    real_child = Tracker.child

    def child_then_crash(self, run_name, tags=None):  # an injected fault: dies after making generation 1's child
        child = real_child(self, run_name, tags)
        if run_name == "generation-0001":
            raise RuntimeError("injected crash while logging")
        return child

    monkeypatch.setattr(Tracker, "child", child_then_crash)
    with pytest.raises(RuntimeError, match="injected crash while logging"):
        flows_module.evolution_run(config)
    state = json.loads((tmp_path / "half-logged" / "state.json").read_text())
    assert (state["completed"], state["logged"]) == (2, 1)  # committed, not logged
    last = pd.read_parquet(tmp_path / "half-logged" / "candidates" / "gen_0001.parquet")

    monkeypatch.undo()
    summary = flows_module.evolution_run(config)
    assert pd.read_parquet(tmp_path / "half-logged" / "candidates" / "gen_0001.parquet").equals(last)  # not redone
    client = MlflowClient(tracking_uri())
    run_id = summary["mlflow_run_id"]
    assert metric_steps(client, run_id, "qd_score") == [0, 1]
    experiment = client.get_run(run_id).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(r.info.run_name for r in children) == ["generation-0000", "generation-0001"]
    assert json.loads((tmp_path / "half-logged" / "state.json").read_text())["logged"] == 2


def test_resume_refuses_changed_settings(tmp_path):
    from evoforge.steps.evolution import ResumeError, prepare_run

    prepare_run(RunConfig(**TINY, out=str(tmp_path), run_name="r"))
    with pytest.raises(ResumeError, match=r"other settings \(batch_size\)"):
        prepare_run(RunConfig(**{**TINY, "batch_size": 8}, out=str(tmp_path), run_name="r"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_help_and_clear_errors():
    help_text = run_cli("run", "--help")
    assert help_text.returncode == 0
    for flag in ("--domain", "--generations", "--experts", "--batch-size", "--max-new-tokens", "--seed", "--out"):
        assert flag in help_text.stdout
    bad = run_cli("run", "--generations", "0")
    assert bad.returncode == 2 and "--generations" in bad.stderr and "greater than or equal to 1" in bad.stderr
    unknown = run_cli("run", "--domain", "poems")
    assert unknown.returncode == 2 and "unknown domain 'poems'" in unknown.stderr
    ask = run_cli("ask", "Plan a trip.", "--min-iterations", "5", "--max-iterations", "2")
    assert ask.returncode == 2 and "min_iterations (5) must not exceed max_iterations (2)" in ask.stderr
    ui = run_cli("ui", "--parameters", '{"config": {"batch_size": 0}}')
    assert ui.returncode == 2 and "batch-size" in ui.stderr  # refused before any server starts


def fine_bins_domain(folder) -> str:
    """The opinions domain on a grid of finer middle bins, written into `folder`: the 135M judge keeps sentiment
    between ~0.2 and 0.8, where the published grid has only two bins, so a tiny run would have too few elites to
    fine-tune on."""
    domain = (DOMAINS_DIR / "opinions.yaml").read_text().replace("bins: [0.005, 0.01,", "bins: [0.3, 0.35, 0.4, 0.45, 0.55, 0.6, 0.65, 0.7] #")
    for relative in ("../pools/opinions.txt", "../references/opinions.csv"):
        domain = domain.replace(relative, str((DOMAINS_DIR / relative).resolve()))
    (folder / "opinions.yaml").write_text(domain)
    return str(folder / "opinions.yaml")


def test_run_with_finetune_registers_evaluates_and_decides(prefect_server, backend, tmp_path):
    from evoforge.core.config import EvaluateConfig, FinetuneConfig
    from flows.evolution import evolution_run

    config = RunConfig(
        **{**TINY, "batch_size": 6}, domain=fine_bins_domain(tmp_path), out=str(tmp_path), run_name="ft",
        finetune=FinetuneConfig(enabled=True, epochs=1, train_batch_size=2),
        evaluate=EvaluateConfig(generations=1, batch_size=2),
    )
    summary = evolution_run(config)
    client = MlflowClient(tracking_uri())
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert metric_steps(client, run.info.run_id, "finetune/final/eval_loss") == [0]
    assert "eval/candidate/qd_score" in run.data.metrics and "eval/champion/qd_score" in run.data.metrics
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/evaluation.md", "evaluation/evaluation_qd.png"} <= artifacts
    data = {f.path for f in client.list_artifacts(run.info.run_id, "finetune/data")}
    assert {"finetune/data/finetune_data.parquet", "finetune/data/finetune_data.jsonl"} <= data

    versions = client.search_model_versions("name='evoforge-opinions'")
    assert versions, "the tuned model is registered"
    promoted = run.data.metrics["eval/promoted"] == 1.0
    aliases = client.get_registered_model("evoforge-opinions").aliases
    assert ("champion" in aliases) == promoted  # the alias moves only when the numbers say so
    report = (tmp_path / "ft" / "evaluation" / "evaluation.md").read_text()
    assert "| qd_score |" in report and ("**Promotion:** yes" in report) == promoted

    import mlflow

    newest = max(versions, key=lambda v: int(v.version))
    model = mlflow.pyfunc.load_model(f"models:/evoforge-opinions/{newest.version}")
    texts = model.predict(pd.DataFrame({"prompt": ["Write one short opinion about carrots."]}),
                          params={"max_new_tokens": 12, "seed": 0})
    assert len(texts) == 1 and len(texts[0].split()) >= 2


def tuned_after_each_generation(folder, run_name: str) -> RunConfig:
    """A tiny run fine-tuned after generation 0 (one epoch), the tuned model joining the experts, then at the end."""
    from evoforge.core.config import EvaluateConfig, FinetuneConfig

    return RunConfig(
        **{**TINY, "batch_size": 6}, domain=fine_bins_domain(folder), out=str(folder), run_name=run_name,
        judge_references=False, heldout_judge=False,
        finetune=FinetuneConfig(enabled=True, every=1, join_population=True, epochs=1, train_batch_size=2),
        evaluate=EvaluateConfig(generations=1, batch_size=2),
    )


# Run in a child process: the flow, with an injected fault that kills the process (SIGKILL: no cleanup, no
# exception handler) right after a tuned model's expert joins the population, before the next generation commits.
KILLED_AFTER_JOIN = """
import os, signal, sys
import flows.evolution as flows_module
from evoforge.core.config import RunConfig

real_join = flows_module.join_expert

def join_then_killed(state, backend):
    real_join(state, backend)
    os.kill(os.getpid(), signal.SIGKILL)

flows_module.join_expert = join_then_killed
flows_module.evolution_run(RunConfig.model_validate_json(sys.argv[1]))
"""


def test_a_tuned_expert_that_joined_survives_a_kill_and_is_not_tuned_again(prefect_server, backend, tmp_path):
    """A tuned model's expert is recorded in the run folder when it joins: a run killed before the next commit
    resumes with it (its backend is the checkpoint folder) and does not fine-tune that boundary again."""
    from pathlib import Path

    from conftest import run_killed_child
    from flows.evolution import evolution_run

    config = tuned_after_each_generation(tmp_path, "joined")
    run_killed_child(KILLED_AFTER_JOIN, config.model_dump_json())  # it got as far as the join

    run_dir = tmp_path / "joined"
    assert json.loads((run_dir / "state.json").read_text())["completed"] == 1
    experts = pd.read_parquet(run_dir / "experts.parquet")
    tuned = experts[experts["backend"] != "smollm2"]
    assert tuned["generation"].tolist() == [0] and tuned["expert_id"].tolist() == [2]  # joined after generation 0
    checkpoint = tuned["backend"].iloc[0]
    assert Path(checkpoint).is_dir() and Path(checkpoint).is_relative_to(run_dir / "finetune" / "g0000")
    client = MlflowClient(tracking_uri())
    run_id = json.loads((run_dir / "state.json").read_text())["mlflow_run_id"]
    assert len(client.search_model_versions(f"run_id='{run_id}'")) == 1  # the boundary's fine-tune, registered

    summary = evolution_run(config)  # resumes after generation 0
    assert summary["mlflow_run_id"] == run_id and client.get_run(run_id).info.status == "FINISHED"
    experts = pd.read_parquet(run_dir / "experts.parquet")
    after = experts[experts["generation"] == 1]
    assert after["expert_id"].tolist() == [0, 1, 2] and after["backend"].iloc[2] == checkpoint
    # Fine-tuned once at the boundary (one epoch logged, one version), once at the end: not again on resume.
    assert len(client.get_metric_history(run_id, "finetune/g0000/eval_loss")) == 1
    assert len(client.search_model_versions(f"run_id='{run_id}'")) == 2
    assert sorted(pd.read_parquet(run_dir / "candidates.parquet")["generation"].unique()) == [0, 1]


# In a child process: the flow, killed (SIGKILL) at the first optimizer step of the mid-run fine-tune after
# generation 0: mid-training, with nothing of it trained to the end, registered or recorded.
KILLED_WHILE_TUNING = """
import os, signal, sys
from torch.optim.optimizer import register_optimizer_step_pre_hook
import evoforge.training.finetuning as finetuning
import flows.evolution as flows_module
from evoforge.core.config import RunConfig

real_train = finetuning.train_and_register

def train_killed_at_first_step(*args, tag, **kwargs):
    if tag == "g0000":
        register_optimizer_step_pre_hook(lambda *_: os.kill(os.getpid(), signal.SIGKILL))
    return real_train(*args, tag=tag, **kwargs)

finetuning.train_and_register = train_killed_at_first_step
flows_module.evolution_run(RunConfig.model_validate_json(sys.argv[1]))
"""


def test_a_mid_run_finetune_cut_short_by_a_kill_is_redone_on_resume_and_joins(prefect_server, backend, tmp_path):
    """The boundary's fine-tune was due and did not finish: resume notices (no recorded outcome for its tag), runs it
    and joins the tuned expert before generation 1; MLflow holds one fine-tune for the tag, not a half and a whole."""
    from pathlib import Path

    from conftest import run_killed_child
    from flows.evolution import evolution_run

    config = tuned_after_each_generation(tmp_path, "cut")
    run_killed_child(KILLED_WHILE_TUNING, config.model_dump_json())

    run_dir = tmp_path / "cut"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == 1  # killed at generation 0's boundary
    assert (run_dir / "finetune" / "g0000").is_dir() and not (run_dir / "finetune" / "g0000" / "outcome.json").exists()
    assert (pd.read_parquet(run_dir / "experts.parquet")["backend"] == "smollm2").all()  # nothing joined
    client = MlflowClient(tracking_uri())
    run_id = state["mlflow_run_id"]
    assert client.search_model_versions(f"run_id='{run_id}'") == []  # nothing registered

    summary = evolution_run(config)
    assert summary["mlflow_run_id"] == run_id and client.get_run(run_id).info.status == "FINISHED"
    outcome = json.loads((run_dir / "finetune" / "g0000" / "outcome.json").read_text())
    checkpoint = outcome["checkpoint"]
    assert Path(checkpoint).is_dir() and Path(checkpoint).is_relative_to(run_dir / "finetune" / "g0000")
    experts = pd.read_parquet(run_dir / "experts.parquet")
    tuned = experts[experts["backend"] == checkpoint]
    assert tuned["expert_id"].tolist() == [2, 2] and tuned["generation"].tolist() == [0, 1]  # joined before gen 1
    assert sorted(pd.read_parquet(run_dir / "candidates.parquet")["generation"].unique()) == [0, 1]
    # One fine-tune for the boundary (one epoch logged once, one version), one at the end; one child per generation.
    assert len(client.get_metric_history(run_id, "finetune/g0000/eval_loss")) == 1
    versions = client.search_model_versions(f"run_id='{run_id}'")
    assert len(versions) == 2 and outcome["version"] in {str(v.version) for v in versions}
    children = client.search_runs([client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(r.info.run_name for r in children) == ["generation-0000", "generation-0001"]
    assert metric_steps(client, run_id, "qd_score") == [0, 1]
