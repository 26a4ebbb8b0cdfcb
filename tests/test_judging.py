import numpy as np
import pandas as pd
import pytest

from evoforge.config import JudgeConfig
from evoforge.judging import combine_mean, first_label_probability, judge_distributions


def test_first_label_probability_normalises_over_the_two_answers():
    logprobs = np.log(np.array([[0.3, 0.1], [0.01, 0.01], [1e-6, 0.5]]))
    assert first_label_probability(logprobs) == pytest.approx([0.75, 0.5, 2e-6], rel=1e-3)


def test_panel_mean_per_question(opinions):
    judges = [JudgeConfig(name="a"), JudgeConfig(name="b")]
    scores = pd.DataFrame(
        {"judge_a_quality": [0.2, 0.8], "judge_b_quality": [0.4, 1.0],
         "judge_a_sentiment": [0.1, 0.9], "judge_b_sentiment": [0.3, 0.5]}
    )
    combined = combine_mean(scores, judges, opinions)
    assert combined["quality"].tolist() == pytest.approx([0.3, 0.9])
    assert combined["measure_sentiment"].tolist() == pytest.approx([0.2, 0.7])


def test_judge_distribution_metrics():
    metrics = judge_distributions(pd.DataFrame({"judge_a_sentiment": [0.0, 0.5, 1.0]}))
    assert metrics["judge/a/sentiment/mean"] == pytest.approx(0.5)
    assert metrics["judge/a/sentiment/std"] == pytest.approx(np.std([0, 0.5, 1]))
    assert metrics["judge/a/sentiment/p10"] == pytest.approx(0.1)
