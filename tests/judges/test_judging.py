import numpy as np
import pandas as pd
import pytest

from evoforge.core.config import JudgeConfig
from evoforge.judges.panel import fit_rule, first_label_probability, judge_distributions, report_metrics


def test_first_label_probability_normalises_over_the_two_answers():
    logprobs = np.log(np.array([[0.3, 0.1], [0.01, 0.01], [1e-6, 0.5]]))
    assert first_label_probability(logprobs) == pytest.approx([0.75, 0.5, 2e-6], rel=1e-3)


def test_question_rule_calibrates_each_judge_then_combines():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120).astype(float)
    biased = 0.75 + 0.15 * (2 * labels - 1) + rng.normal(0, 0.05, 120)  # right ranking, wrong threshold
    inverted = 1 - labels * 0.8 - 0.1  # reads the question backwards
    raw = np.column_stack([biased, inverted])
    rule = fit_rule(raw, labels, ["platt", "none"], [None, None], "stacking")
    combined = rule(raw)
    assert ((combined >= 0.5) == (labels == 1)).mean() > 0.95
    plain = fit_rule(None, None, ["none", "none"], [None, None], "mean")  # no references: a plain mean
    assert plain(np.array([[0.2, 0.4]]))[0] == pytest.approx(0.3)


def test_reference_methods_without_references_fail_with_the_fix(opinions):
    from evoforge.judges.panel import fit_panel, questions

    with pytest.raises(ValueError, match="references:"):
        fit_panel({}, [JudgeConfig(name="a", calibration="platt")], questions(opinions), "mean", None)


def test_report_metrics_names():
    report = pd.DataFrame([{"question": "sentiment", "name": "combine:bma", "accuracy": 0.9, "auc": np.nan}])
    assert report_metrics(report) == {"ref/sentiment/combine-bma/accuracy": 0.9}


def test_judge_distribution_metrics():
    metrics = judge_distributions(pd.DataFrame({"judge_a_sentiment": [0.0, 0.5, 1.0]}))
    assert metrics["judge/a/sentiment/mean"] == pytest.approx(0.5)
    assert metrics["judge/a/sentiment/std"] == pytest.approx(np.std([0, 0.5, 1]))
    assert metrics["judge/a/sentiment/p10"] == pytest.approx(0.1)
    assert metrics["judge/a/sentiment/failed"] == 0.0


def test_bin_agreement_counts_same_and_neighbouring_cells():
    from evoforge.judges.panel import bin_agreement

    ours = np.array([[3, 4], [0, 0], [9, 9], [5, 5]])
    theirs = np.array([[3, 4], [1, 0], [7, 9], [6, 4]])  # same, one bin off, two bins off, one off on both axes
    assert bin_agreement(ours, theirs) == (0.25, 0.75)
    assert all(np.isnan(bin_agreement(np.zeros((0, 2)), np.zeros((0, 2)))))
