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
