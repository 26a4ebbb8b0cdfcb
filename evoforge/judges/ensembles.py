"""Combining several judges' scores for one question into the panel's score.

Input is a matrix of shape (texts, judges) of probabilities in [0, 1], NaN where a judge failed. Methods:
- `mean`: the average over the judges that answered.
- `weighted`: a weighted average; weights from each judge's accuracy on reference labels (above chance), or,
  without references, from its correlation with the other judges' mean (agreement with the panel).
- `vote`: majority vote of the judges' answers (score >= 0.5); the score is the share of votes for the first label.
- `bma`: Bayesian model averaging: each judge is a model of the labels, weighted by its posterior probability,
  proportional to its likelihood on the reference labels (uniform prior).
- `stacking`: a logistic regression on the judges' log-odds, fitted on reference labels.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression

from evoforge.judges.calibration import EPS, logit

CombineMethod = Literal["mean", "weighted", "vote", "bma", "stacking"]
COMBINE_METHODS: tuple[str, ...] = ("mean", "weighted", "vote", "bma", "stacking")
NEEDS_REFERENCES = {"bma", "stacking"}


@dataclass
class Ensemble:
    """A fitted combination rule. `combine(scores)` maps a (texts, judges) matrix to one score per text."""

    method: CombineMethod = "mean"
    weights: np.ndarray | None = None  # weighted, bma: one per judge, summing to 1
    model: object = field(default=None, repr=False)  # stacking: the fitted meta-model

    def combine(self, scores) -> np.ndarray:
        scores = np.atleast_2d(np.asarray(scores, dtype=float))
        answered = ~np.isnan(scores)
        if self.method == "mean":
            return _weighted_mean(scores, np.ones(scores.shape[1]))
        if self.method == "weighted" and self.weights is None:
            # No reference labels: weigh each judge by its agreement with the others on these very texts.
            weights = np.clip(np.nan_to_num(panel_agreement(scores), nan=0.0), 1e-3, None)
            return _weighted_mean(scores, weights)
        if self.method in ("weighted", "bma"):
            return _weighted_mean(scores, self.weights)
        if self.method == "vote":
            votes = np.where(answered, scores >= 0.5, False).sum(axis=1)
            n = answered.sum(axis=1)
            return np.where(n > 0, votes / np.maximum(n, 1), np.nan)
        if self.method == "stacking":
            # A judge that failed contributes log-odds 0 ("no opinion").
            features = np.where(answered, logit(scores), 0.0)
            return self.model.predict_proba(features)[:, 1]
        raise ValueError(f"combine: unknown method {self.method!r}; expected one of {COMBINE_METHODS}")


def _weighted_mean(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean per row over the judges that answered (weights renormalised); NaN where none did."""
    w = np.where(np.isnan(scores), 0.0, np.asarray(weights, dtype=float)[None, :])
    total = w.sum(axis=1)
    mean = (np.nan_to_num(scores) * w).sum(axis=1) / np.where(total > 0, total, 1.0)
    return np.where(total > 0, mean, np.nan)


def panel_agreement(scores) -> np.ndarray:
    """Each judge's Pearson correlation with the mean of the other judges (NaN with one judge or no variance)."""
    scores = np.asarray(scores, dtype=float)
    out = np.full(scores.shape[1], np.nan)
    if scores.shape[1] < 2:
        return out
    for j in range(scores.shape[1]):
        others = np.nanmean(np.delete(scores, j, axis=1), axis=1)
        ok = ~np.isnan(scores[:, j]) & ~np.isnan(others)
        if ok.sum() > 2 and scores[ok, j].std() > 0 and others[ok].std() > 0:
            out[j] = float(np.corrcoef(scores[ok, j], others[ok])[0, 1])
    return out


def log_likelihood(scores, labels) -> np.ndarray:
    """Each judge's Bernoulli log-likelihood of the labels, over labelled texts; a failure counts as p = 0.5."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    ok = ~np.isnan(labels)
    p = np.clip(np.where(np.isnan(scores[ok]), 0.5, scores[ok]), EPS, 1 - EPS)
    y = labels[ok][:, None]
    return (y * np.log(p) + (1 - y) * np.log(1 - p)).sum(axis=0)


def fit_ensemble(method: CombineMethod, scores=None, labels=None) -> Ensemble:
    """Fit `method` on judges' scores of reference texts with known labels (1: first label, 0: second, NaN:
    unlabelled). `mean` and `vote` need nothing; `weighted` without labels weighs judges by their agreement with
    the panel on the texts it combines."""
    if method in ("mean", "vote"):
        return Ensemble(method)
    if method not in COMBINE_METHODS:
        raise ValueError(f"combine: unknown method {method!r}; expected one of {COMBINE_METHODS}")
    has_labels = labels is not None and np.any(~np.isnan(np.asarray(labels, dtype=float)))
    if method in NEEDS_REFERENCES and not has_labels:
        raise ValueError(f"combine={method} needs reference labels: add `references:` to the domain file, "
                         "or use combine=mean, weighted or vote")
    if method == "weighted" and not has_labels:
        return Ensemble(method)
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    if method == "weighted":
        ok = ~np.isnan(labels)
        correct = np.where(np.isnan(scores[ok]), False, (scores[ok] >= 0.5) == (labels[ok, None] == 1))
        weights = np.clip(correct.mean(axis=0) - 0.5, 1e-3, None)  # accuracy above chance
        return Ensemble(method, weights=weights / weights.sum())
    if method == "bma":
        loglik = log_likelihood(scores, labels)
        posterior = np.exp(loglik - loglik.max())
        return Ensemble(method, weights=posterior / posterior.sum())
    ok = ~np.isnan(labels)
    if len(np.unique(labels[ok])) < 2:
        raise ValueError("combine=stacking needs reference labels of both kinds")
    features = np.where(np.isnan(scores[ok]), 0.0, logit(scores[ok]))
    return Ensemble(method, model=LogisticRegression(C=1.0).fit(features, labels[ok]))
