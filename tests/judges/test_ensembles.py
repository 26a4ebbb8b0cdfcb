"""Combination methods on constructed judge outputs where the right answer is known."""

import numpy as np
import pytest

from evoforge.judges.measures import accuracy, out_of_fold
from evoforge.judges.ensembles import COMBINE_METHODS, fit_ensemble, panel_agreement


def constructed_panel(n=400, seed=0):
    """Labels and three judges: `good` is right 85% of the time, `noise` is a coin flip, `inverted` answers the
    opposite of the truth, confidently (a judge that misreads the question)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    right = rng.random(n) < 0.85
    good = np.where(right == (y == 1), rng.uniform(0.6, 0.95, n), rng.uniform(0.05, 0.4, n))
    noise = rng.uniform(0, 1, n)
    inverted = np.where(y == 1, rng.uniform(0.05, 0.3, n), rng.uniform(0.7, 0.95, n))
    return np.column_stack([good, noise, inverted]), y


def test_mean_and_vote_skip_failed_judges():
    scores = np.array([[0.9, np.nan, 0.1], [0.8, 0.7, 0.2], [np.nan, np.nan, np.nan]])
    mean = fit_ensemble("mean").combine(scores)
    assert mean[:2] == pytest.approx([0.5, 0.5667], abs=1e-3)
    assert np.isnan(mean[2])  # nobody answered: no score, not a zero
    vote = fit_ensemble("vote").combine(scores)
    assert vote[:2] == pytest.approx([0.5, 2 / 3])
    assert np.isnan(vote[2])


def test_weighted_by_reference_accuracy_trusts_the_good_judge():
    scores, y = constructed_panel()
    ensemble = fit_ensemble("weighted", scores[:, :2], y)
    assert ensemble.weights.sum() == pytest.approx(1.0)
    assert ensemble.weights[0] > 0.9  # the coin flip earns (almost) nothing
    assert accuracy(ensemble.combine(scores[:, :2]), y) > accuracy(fit_ensemble("mean").combine(scores[:, :2]), y)


def test_weighted_without_references_follows_panel_agreement():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 1, 200)
    noisy = [np.clip(truth + rng.normal(0, 0.05, 200), 0, 1) for _ in range(3)]
    scores = np.column_stack([*noisy, 1 - truth])
    agreement = panel_agreement(scores)
    assert np.all(agreement[:3] > 0.5) and agreement[3] < -0.9
    combined = fit_ensemble("weighted").combine(scores)  # weights come from the texts being combined
    assert np.corrcoef(combined, truth)[0, 1] > 0.99


def test_bma_posterior_concentrates_on_the_likeliest_judge():
    scores, y = constructed_panel()
    ensemble = fit_ensemble("bma", scores, y)
    assert ensemble.weights.sum() == pytest.approx(1.0)
    assert ensemble.weights[0] == pytest.approx(1.0, abs=1e-6)  # hundreds of labels: the posterior is decisive


def test_stacking_learns_to_read_an_inverted_judge():
    scores, y = constructed_panel()
    only_inverted = scores[:, [2]]
    assert accuracy(fit_ensemble("mean").combine(only_inverted), y) < 0.05
    stacked = out_of_fold(lambda s, l: fit_ensemble("stacking", s, l).combine, only_inverted, y)
    assert accuracy(stacked, y) > 0.95


@pytest.mark.parametrize("method", COMBINE_METHODS)
def test_every_method_at_least_matches_the_best_of_three_independent_judges(method):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 600).astype(float)
    judges = []
    for skill in (0.8, 0.75, 0.7):  # independent errors: the case where combining helps
        right = rng.random(len(y)) < skill
        judges.append(np.where(right == (y == 1), rng.uniform(0.55, 0.95, len(y)), rng.uniform(0.05, 0.45, len(y))))
    scores = np.column_stack(judges)
    best_single = max(accuracy(scores[:, j], y) for j in range(3))
    predictions = out_of_fold(lambda s, l: fit_ensemble(method, s, l).combine, scores, y)
    assert accuracy(predictions, y) >= best_single - 0.02
    assert np.all((predictions >= 0) & (predictions <= 1))


def test_reference_methods_refuse_to_fit_without_labels():
    with pytest.raises(ValueError, match="needs reference labels"):
        fit_ensemble("stacking", np.full((3, 2), 0.5), None)
    with pytest.raises(ValueError, match="unknown method"):
        fit_ensemble("median", np.full((3, 2), 0.5), np.ones(3))


def test_out_of_fold_never_sees_its_own_label():
    y = np.array([1, 0] * 10 + [np.nan, np.nan], dtype=float)
    # A "model" that predicts the mean label of its training fold: held-out rows cannot get their own label.
    predictions = out_of_fold(lambda s, l: (lambda t: np.full(len(t), l.mean())), np.zeros(len(y)), y, folds=5)
    assert np.all(np.isnan(predictions[-2:]))  # unlabelled rows get no prediction
    assert np.all((predictions[:-2] > 0.3) & (predictions[:-2] < 0.7))
