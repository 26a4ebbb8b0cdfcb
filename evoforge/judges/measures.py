"""How good a judge (or a panel) is on labelled references: accuracy, ranking quality, and honest out-of-fold
predictions for methods fitted on the same references."""

import numpy as np
from sklearn.metrics import roc_auc_score


def accuracy(scores, labels) -> float:
    """Share of texts on the right side of 0.5 (NaN scores count as wrong: a failed judgement is no answer)."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    return float(np.mean(np.where(np.isnan(scores), False, (scores >= 0.5) == (labels == 1))))


def auc(scores, labels) -> float:
    """Ranking quality (ROC AUC) over the texts the judge scored; NaN when one class is missing."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    ok = ~np.isnan(scores)
    if len(np.unique(labels[ok])) < 2:
        return float("nan")
    return float(roc_auc_score(labels[ok], scores[ok]))


def out_of_fold(fit, scores, labels, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Honest predictions for labelled references: each fold is predicted by `fit` trained on the other folds.

    `fit(scores, labels)` returns a function from scores to predictions. Unlabelled rows stay NaN."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    labelled = np.flatnonzero(~np.isnan(labels))
    rng = np.random.default_rng(seed)
    # Stratified: each fold gets its share of both labels, so every training split has both.
    assignment = np.empty(len(labels), dtype=int)
    for value in (0.0, 1.0):
        idx = rng.permutation(labelled[labels[labelled] == value])
        assignment[idx] = np.arange(len(idx)) % folds
    out = np.full(len(labels), np.nan)
    for k in range(folds):
        test = labelled[assignment[labelled] == k]
        train = labelled[assignment[labelled] != k]
        if len(test):
            out[test] = fit(scores[train], labels[train])(scores[test])
    return out
