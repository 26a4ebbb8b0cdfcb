import numpy as np
import pytest

from evoforge.judges.calibration import fit_calibrator
from evoforge.judges.measures import accuracy, auc


def biased_judge(n=200, seed=0):
    """A judge that ranks well but says 'first label' for nearly everything (raw scores 0.55-0.95)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    raw = np.clip(0.75 + 0.15 * (2 * y - 1) + rng.normal(0, 0.05, n), 0.55, 0.95)
    return raw, y


def test_contextual_divides_out_the_content_free_answer():
    calibrate = fit_calibrator("contextual", content_free=0.8)
    out = calibrate(np.array([0.8, 0.95, 0.5, np.nan]))
    assert out[0] == pytest.approx(0.5)  # what the judge says about nothing is the new midpoint
    assert out[1] > 0.5 > out[2]
    assert np.isnan(out[3])  # a failed judgement stays failed


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_fitted_calibration_fixes_a_biased_but_informative_judge(method):
    raw, y = biased_judge()
    assert accuracy(raw, y) == pytest.approx(y.mean())  # every raw answer is 'first label'
    calibrate = fit_calibrator(method, raw[:100], y[:100])
    held_out = calibrate(raw[100:])
    assert accuracy(held_out, y[100:]) > 0.9
    assert auc(held_out, y[100:]) > 0.9
    assert np.all(np.diff(calibrate(np.linspace(0.55, 0.95, 50))) >= -1e-12)  # monotone: ranking kept


def test_none_is_the_identity_and_errors_name_the_fix():
    assert fit_calibrator("none")(np.array([0.3]))[0] == 0.3
    with pytest.raises(ValueError, match="references"):
        fit_calibrator("platt", None, None)
    with pytest.raises(ValueError, match="content-free"):
        fit_calibrator("contextual")
    with pytest.raises(ValueError, match="both labels"):
        fit_calibrator("isotonic", np.array([0.2, 0.4]), np.array([1.0, 1.0]))


def test_accuracy_counts_failures_as_wrong_and_auc_skips_them():
    scores, labels = np.array([0.9, 0.2, np.nan, 0.7]), np.array([1.0, 0.0, 1.0, 0.0])
    assert accuracy(scores, labels) == pytest.approx(0.5)
    assert auc(scores, labels) == pytest.approx(1.0)


def test_anchors_send_each_side_s_median_text_to_the_very_bins_and_spread_where_platt_squeezes():
    # Weak labels: a judge whose scores stay in 0.35-0.75, and a quarter of each side's labels wrong (texts the
    # generator was asked to write at a pole but did not).
    rng = np.random.default_rng(0)
    y = np.repeat([1.0, 0.0], 100)
    raw = np.clip(np.where(y == 1, 0.62, 0.48) + rng.normal(0, 0.06, 200), 0.35, 0.75)
    noisy = np.where(rng.random(200) < 0.25, 1 - y, y)
    anchors = fit_calibrator("anchors", raw, noisy)
    for side, target in ((1.0, 0.95), (0.0, 0.05)):
        assert anchors(np.array([np.median(raw[noisy == side])]))[0] == pytest.approx(target, abs=1e-3)
    calibrated = anchors(raw)
    assert np.all(np.diff(calibrated[np.argsort(raw)]) >= 0)  # monotone: the ranking (and AUC) is the judge's
    platt = fit_calibrator("platt", raw, noisy)(raw)
    assert np.ptp(calibrated) > 0.9 and np.ptp(platt) < 0.8  # the anchors spread what noisy Platt squeezes
    assert np.isnan(anchors(np.array([np.nan]))[0])


def test_anchors_leave_a_judge_that_cannot_tell_the_sides_apart_raw():
    scores = np.array([0.6, 0.7, 0.4, 0.5])
    same = fit_calibrator("anchors", scores, np.array([0.0, 0.0, 1.0, 1.0]))  # the 1s score lower than the 0s
    assert same.method == "none" and np.allclose(same(scores), scores)
