"""Calibrating one judge's raw probabilities for one question.

A small judge's P(first label) is biased (the 135M model leans to one answer) yet ranks texts usefully, so a
monotone map fitted on reference labels fixes much of it. Methods:
- `contextual`: divide out the probabilities the judge gives a content-free input (Zhao et al. 2021); needs no
  labels, only the judge's score for e.g. "N/A".
- `platt`: logistic regression on the log-odds, fitted on reference labels.
- `isotonic`: a monotone step function fitted on reference labels.
- `anchors`: a linear map of the log-odds that sends the median score of the texts labelled 1 to P = 0.95 and of
  those labelled 0 to 0.05. Meant for weak labels (texts written to be "very positive" / "very negative", see
  `evoforge.judges.weak_labels`): Platt scaling on such noisy labels fits a shallow slope that squeezes the scores
  into the middle, while the anchors say what the ends of the axis look like. 0.95 is where the niches' words
  say "very" (`evoforge.core.niches`), which is what the texts were asked to be. A judge whose median text labelled
  1 scores no higher than its median text labelled 0 cannot place them, and is left raw.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

CalibrationMethod = Literal["none", "contextual", "platt", "isotonic", "anchors"]
ANCHOR = 0.95  # the calibrated P of a median text labelled 1 (and 1 - ANCHOR for one labelled 0)
CONTENT_FREE_TEXTS = ("N/A", "[MASK]", "")
EPS = 1e-6


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def contextual(probs, content_free) -> np.ndarray:
    """Contextual calibration over k labels: each label's probability divided by the one the judge gives it on
    content-free inputs, renormalised per row. For two labels it shifts the log-odds by logit(p_cf)."""
    p = np.asarray(probs, dtype=float) / np.clip(np.asarray(content_free, dtype=float), EPS, None)
    return p / p.sum(axis=-1, keepdims=True)


@dataclass
class Calibrator:
    """A fitted map from raw to calibrated probabilities. `none` is the identity; NaN stays NaN."""

    method: CalibrationMethod = "none"
    content_free: float | None = None  # contextual: the judge's P(first label) on content-free inputs
    model: object = field(default=None, repr=False)  # platt / isotonic: the fitted sklearn model
    anchors: tuple[float, float] | None = None  # anchors: the median log-odds of the texts labelled 0 and 1

    def __call__(self, scores) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        out = np.full(scores.shape, np.nan)
        ok = ~np.isnan(scores)
        p = np.clip(scores[ok], EPS, 1 - EPS)
        if self.method == "none":
            out[ok] = scores[ok]
        elif self.method == "contextual":
            both = contextual(np.stack([p, 1 - p], axis=1), np.array([self.content_free, 1 - self.content_free]))
            out[ok] = both[:, 0]
        elif self.method == "platt":
            out[ok] = self.model.predict_proba(logit(p).reshape(-1, 1))[:, 1]
        elif self.method == "isotonic":
            out[ok] = self.model.predict(p)
        elif self.method == "anchors":
            low, high = self.anchors
            z = logit(ANCHOR) * (2 * logit(p) - low - high) / (high - low)
            out[ok] = 1.0 / (1.0 + np.exp(-z))
        return out


def fit_calibrator(method: CalibrationMethod, scores=None, labels=None, content_free: float | None = None) -> Calibrator:
    """Fit `method` on a judge's raw scores for labelled references (platt, isotonic) or on its content-free
    score (contextual). Unlabelled (NaN) references and failed (NaN) scores are left out."""
    if method == "none":
        return Calibrator()
    if method == "contextual":
        if content_free is None or np.isnan(content_free):
            raise ValueError("contextual calibration needs the judge's score for a content-free input")
        return Calibrator(method, content_free=float(content_free))
    if scores is None or labels is None:
        raise ValueError(f"{method} calibration needs reference labels: add `references:` to the domain file")
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    ok = ~np.isnan(scores) & ~np.isnan(labels)
    if len(np.unique(labels[ok])) < 2:
        raise ValueError(f"{method} calibration needs references of both labels, got {int(ok.sum())} of one")
    if method == "platt":
        model = LogisticRegression(C=1.0).fit(logit(scores[ok]).reshape(-1, 1), labels[ok])
    elif method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores[ok], labels[ok])
    elif method == "anchors":
        low, high = (float(np.median(logit(scores[ok & (labels == y)]))) for y in (0, 1))
        if high <= low:  # the judge cannot place the two sides (or a small fold of them): leave it raw
            return Calibrator()
        return Calibrator(method, anchors=(low, high))
    else:
        raise ValueError(f"calibration: unknown method {method!r}; expected none, contextual, platt, isotonic or "
                         "anchors")
    return Calibrator(method, model=model)
