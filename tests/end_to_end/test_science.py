"""The science benchmark end to end at a tiny budget: the improved search (`splice`) and random search through the
real `evolution_run` flow (real Prefect server, MLflow store, models, Parquet) on a domain without references,
calibrated on weak references; then the summary, held-out judge check, plot and results file."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.mark.slow
def test_science_benchmark_runs_splice_search_through_the_flow(prefect_server, backend, tmp_path):
    import science

    payload = science.main(["--quick", "--domains", "jaws", "--methods", "splice", "zero_shot", "--seeds", "0",
                            "--generations", "3", "--batch-size", "4", "--max-new-tokens", "12",
                            "--weak-references", "2", "--panel", "embedding", "--out", str(tmp_path / "runs"),
                            "--results", str(tmp_path / "results")])
    assert payload["complete"] and payload["budget"]["candidates"] == 12
    runs = pd.DataFrame(payload["runs"])
    assert sorted(runs["method"]) == ["splice", "zero_shot"] and (runs["candidates"] == 12).all()
    assert runs["heldout_agreement"].between(0, 1).all() and (runs["heldout_same_cell"] <= runs["heldout_agreement"]).all()
    assert all(len(curve) == 3 and curve[0] <= curve[1] <= curve[2] for curve in runs["qd_curve"])  # QD never falls

    run_dirs = runs.set_index("method")["run_dir"]
    splice = pd.read_parquet(Path(run_dirs["splice"]) / "candidates.parquet")
    assert set(splice.loc[splice["generation"] == 0, "mutation"]) == {"target_zero_shot"}  # nothing to splice yet
    spliced = splice[splice["mutation"] == "splice"]
    assert len(spliced) and spliced["generation"].min() >= 1
    for text, generation in zip(spliced["text"], spliced["generation"]):  # it starts with an earlier text's words
        earlier = splice.loc[splice["generation"] < generation, "text"]
        assert any(text.startswith(e.split()[0] + " ") or text.startswith(e.split(".")[0] + ".") for e in earlier)
    # Both runs' judges were calibrated on the same weak references: anchors, fitted on texts written at the poles;
    # the embedding judge scored the measure (not quality) and the panel weighed its judges on those texts (bma).
    for run_dir in run_dirs:
        report = pd.read_parquet(Path(run_dir) / "judges.parquet")
        assert set(report.loc[report["kind"].isin(["logprob", "embedding"]), "calibration"]) == {"anchors"}
        assert set(report.loc[report["kind"] == "embedding", "question"]) == {"sentiment"}
        assert json.loads((Path(run_dir) / "config.json").read_text())["combine"] == "auto"
    assert splice["judge_emb_sentiment"].notna().all() and "judge_emb_quality" not in splice

    summary = pd.DataFrame(payload["summary"]).set_index("method")
    assert summary.loc["zero_shot", "qd_score_ratio"] == pytest.approx(1.0)
    assert summary.loc["splice", "qd_score_ratio"] == pytest.approx(
        summary.loc["splice", "qd_score"] / summary.loc["zero_shot", "qd_score"])
    results = sorted((tmp_path / "results").glob("*-science-quick.*"))
    assert [p.suffix for p in results] == [".json", ".png"]
    assert json.loads(results[0].read_text())["table"].count("| jaws |") == 2
    assert payload["budget"]["weak_references"] == 2 and payload["panel"] == "embedding"


def test_ratio_interval_and_t_interval_on_known_numbers():
    import numpy as np
    import science

    mean, low, high = science.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2.0 - 4.303 / np.sqrt(3), abs=1e-3) and high > 3.0
    assert science.interval([5.0]) == (5.0, 5.0, 5.0)
    ratio, low, high = science.ratio_interval([3.0, 3.0], [2.0, 2.0], np.random.default_rng(0))
    assert ratio == low == high == 1.5
    ratio, low, high = science.ratio_interval([2.0, 4.0], [1.0, 3.0], np.random.default_rng(0))
    assert ratio == 1.5 and low < 1.5 < high


def test_runs_in_one_process_share_a_fitted_panel_only_when_judges_domain_and_models_match():
    from evoforge.core.config import JudgeConfig, RunConfig
    from evoforge.core.domain import load_domain
    from evoforge.steps.evolution import make_panel

    backends = {"smollm2": object()}  # nothing is scored: no references, no contextual calibration
    config = RunConfig(judge_references=False)
    domain = load_domain("opinions")
    panel = make_panel(config, domain, backends)  # the fitted rules are shared; the guard switch is each run's
    assert make_panel(config.model_copy(update={"seed": 7, "search": "target"}), domain, backends).rules is panel.rules
    unguarded = make_panel(config.model_copy(update={"judge_guards": False}), domain, backends)
    assert unguarded.rules is panel.rules and panel.guard and not unguarded.guard
    assert make_panel(config, domain, {"smollm2": object()}).rules is not panel.rules  # another loaded model
    assert make_panel(config, load_domain("jaws"), backends).rules is not panel.rules
    other = config.model_copy(update={"judges": [JudgeConfig(name="solo")]})
    assert make_panel(other, domain, backends).judges == other.judges


def test_shared_opening_counts_the_elites_of_one_family():
    import science

    assert science.shared_opening(["I love peas and carrots a lot.", "I love peas and carrots so much.",
                                   "Beans are fine by me today."]) == pytest.approx(2 / 3)
    assert science.shared_opening(["One two three four five six.", "Six five four three two one."]) == 0.0
    assert science.shared_opening([]) == 0.0
