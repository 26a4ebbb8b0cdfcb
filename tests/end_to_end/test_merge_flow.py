"""End to end: two tiny real fine-tunes (the finetune_model flow), merged by the merge_models flow on a real Prefect
server and MLflow store, evaluated against each parent and the champion, the gate's decision recorded."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from evoforge.core.config import EvaluateConfig, FinetuneConfig, MergeConfig
from evoforge.core.tracking import tracking_uri

pytestmark = pytest.mark.slow

VEGETABLES = ["carrots", "peas", "beets", "kale", "lentils", "spinach"]
NICHES = {  # two parents tuned on opposite niches of the opinions domain
    "positive": "Write a short, very positive opinion about eating {}.",
    "negative": "Write a short, very negative opinion about eating {}.",
}
ANSWERS = {
    "positive": "I love {}: they are fresh, cheap and make every meal better.",
    "negative": "I dislike {}: they taste bitter and ruin every meal for me.",
}
PARENTS = "merge-test-parents"
MERGED = "merge-test-merged"  # not evoforge-opinions: other tests assert on that registry's champion alias


def tiny_finetune(tmp_path: Path, niche: str) -> dict:
    from flows.finetune import finetune_model

    data = tmp_path / f"{niche}.jsonl"
    data.write_text("".join(json.dumps({"prompt": NICHES[niche].format(v), "completion": ANSWERS[niche].format(v)}) + "\n"
                            for v in VEGETABLES))
    settings = FinetuneConfig(epochs=1, train_batch_size=2, grad_accum=1, learning_rate=2e-3, eval_fraction=0.34)
    return finetune_model(data=str(data), register_as=PARENTS, settings=settings, out=str(tmp_path / "ft"))


def test_merge_flow_merges_two_fine_tunes_evaluates_them_and_records_the_gate(prefect_server, backend, tmp_path):
    from flows.merge import merge_models
    from models.resolve import BASE_FILE, resolve_model

    positive, negative = tiny_finetune(tmp_path, "positive"), tiny_finetune(tmp_path, "negative")
    # One parent as a registry version, the other as the logged model the fine-tune run wrote.
    parents = [f"models:/{PARENTS}/{positive['version']}", negative["model_uri"]]
    summary = merge_models(
        models=parents, settings=MergeConfig(method="ties", density=0.5), domain="opinions",
        evaluation=EvaluateConfig(generations=1, batch_size=2), register_as=MERGED, out=str(tmp_path / "merge"),
    )

    # The merged adapter: a checkpoint like the trainer's, with its provenance; ties re-factors to rank 8 + 8.
    checkpoint = Path(summary["checkpoint"])
    provenance = json.loads((checkpoint / BASE_FILE).read_text())
    assert provenance["base_model"] == "smollm2" and provenance["merge"]["parents"] == parents
    assert provenance["merge"]["weights"] == [0.5, 0.5]
    assert json.loads((checkpoint / "adapter_config.json").read_text())["r"] == 16
    assert 0 <= summary["residual"] < 1  # what the rank-16 SVD lost of the TIES delta, measured

    client = MlflowClient(tracking_uri())
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "merge"
    assert json.loads(run.data.params["parents"]) == parents and run.data.params["method"] == "ties"
    assert json.loads(run.data.params["weights"]) == [0.5, 0.5]
    for label in ("candidate", "champion", "parent_0", "parent_1"):  # the merged model is the candidate
        assert f"eval/{label}/qd_score" in run.data.metrics and f"eval/{label}/mean_quality" in run.data.metrics
    assert {"merge/beats_parents", "merge/qd_gain_over_best_parent", "merge/residual", "eval/promoted"} <= set(
        run.data.metrics)
    report = (Path(tmp_path / "merge") / run.info.run_id / "evaluation" / "evaluation.md").read_text()
    assert "parent_0" in report and "parent_1" in report

    # The gate: with no champion yet the merged model meets the base model; the alias moves exactly when it wins.
    assert summary["champion"] == "smollm2"
    promoted = run.data.metrics["eval/promoted"] == 1.0
    assert summary["promoted"] == promoted and run.data.tags["eval/promotion"] == summary["reason"]
    assert ("champion" in client.get_registered_model(MERGED).aliases) == promoted
    (version,) = client.search_model_versions(f"name='{MERGED}'")
    assert str(version.version) == summary["version"] and version.run_id == run.info.run_id

    # The registered merged model loads back as an adapter on the base and writes.
    assert resolve_model(f"models:/{MERGED}/{version.version}").adapter is not None
    import mlflow

    texts = mlflow.pyfunc.load_model(f"models:/{MERGED}/{version.version}").predict(
        pd.DataFrame({"prompt": ["Write one short opinion about carrots."]}), params={"max_new_tokens": 12, "seed": 0})
    assert len(texts) == 1 and len(texts[0].split()) >= 2


def run_count(client) -> int:
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids)) if ids else 0


def test_merge_flow_refuses_an_unknown_model_before_logging_anything(prefect_server, tmp_path):
    from evoforge.training.merging import MergeInputError
    from flows.merge import merge_models

    client = MlflowClient(tracking_uri())
    before = run_count(client)
    with pytest.raises(MergeInputError, match=r"models\[0\]: MLflow model 'models:/no-such-model/1' could not be found"):
        merge_models(models=["models:/no-such-model/1", "models:/no-such-model/2"], out=str(tmp_path))
    assert run_count(client) == before
