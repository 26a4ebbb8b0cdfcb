"""A learned ranker of one task's answers (`selection: ranker`): seed 002's ranking model, over its features.

Seed 002 ranks search results by cosine similarity with the query, content length and keyword overlap. Here the
results are a task's answers and the features (computed by `evoforge.judges.selection.answer_features`) are:
`task_cosine` (MiniLM cosine of answer and task), `peer_cosine` (mean cosine to the other answers), `log_words`,
`task_overlap` (share of the answer's words that are the task's), `peer_overlap` (mean overlap of the words it adds
with those the others add), plus what the selections already compute: the judges' `score`, the consensus
`agreement` and, when a value model is given, its prediction `value`.

The model is pairwise (RankNet-style, linear): a logistic regression without intercept on the feature differences
of (correct, wrong) answer pairs of the same task. Only within-task differences matter, so a feature whose level
moves from task to task (every answer to a long question overlaps it more) cannot pose as a sign of correctness,
which a pointwise fit on pooled answers would let it. Tasks whose answers are all right or all wrong hold no pair
and teach nothing. Features are standardised over the training answers first, so the weights compare.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

RANKER_FEATURES = ("task_cosine", "peer_cosine", "log_words", "task_overlap", "peer_overlap", "score", "agreement",
                   "value")


@dataclass
class Ranker:
    """A fitted linear ranker: `score(frame)` is higher for the answers more likely correct."""

    columns: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    pairs: int = 0  # (correct, wrong) pairs it was fitted on

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns if c not in frame]
        if missing:
            raise ValueError(f"selection=ranker: the answers lack the features {missing} the ranker was fitted on; "
                             "compute them as fit time did (judges' score, a value model) or refit without them")
        x = (frame[list(self.columns)].to_numpy(dtype=float) - self.mean) / self.scale
        return np.nan_to_num(x, nan=0.0)  # an unscored answer counts as the training mean

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.matrix(frame) @ self.weights

    def coefficients(self) -> dict[str, float]:
        return {c: round(float(w), 4) for c, w in zip(self.columns, self.weights)}


def usable_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The ranker features present in `frame` with at least one value (the judges' score only where judges ran)."""
    return tuple(c for c in RANKER_FEATURES if c in frame and frame[c].notna().any())


def ranking_pairs(x: np.ndarray, correct: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Feature differences (correct minus wrong) of every pair of answers to the same task."""
    diffs = []
    for group in pd.unique(groups):
        rows = groups == group
        right, wrong = x[rows & (correct == 1)], x[rows & (correct == 0)]
        if len(right) and len(wrong):
            diffs.append((right[:, None, :] - wrong[None, :, :]).reshape(-1, x.shape[1]))
    return np.vstack(diffs) if diffs else np.empty((0, x.shape[1]))


def fit_ranker(frame: pd.DataFrame, correct, groups, columns: tuple[str, ...] | None = None,
               regularisation: float = 1.0) -> Ranker:
    """Fit the pairwise ranker on labelled answers: `correct` 0/1 per row, `groups` the task each row answers."""
    columns = usable_columns(frame) if columns is None else tuple(columns)
    if not columns:
        raise ValueError(f"selection=ranker: no ranker features in the answers; expected some of {RANKER_FEATURES}")
    raw = frame[list(columns)].to_numpy(dtype=float)
    mean = np.nanmean(raw, axis=0)
    scale = np.nanstd(raw, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    x = np.nan_to_num((raw - mean) / scale, nan=0.0)
    diffs = ranking_pairs(x, np.asarray(correct, dtype=float), np.asarray(groups))
    if not len(diffs):
        raise ValueError("selection=ranker needs labelled tasks with both a correct and a wrong answer; the "
                         "labelled split has none")
    # Each pair both ways round: the classes balance and, without intercept, the fit is symmetric.
    model = LogisticRegression(C=regularisation, fit_intercept=False, max_iter=1000).fit(
        np.vstack([diffs, -diffs]), np.r_[np.ones(len(diffs)), np.zeros(len(diffs))])
    return Ranker(columns, mean, scale, model.coef_[0].copy(), len(diffs))


def grouped_folds(groups, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out splits by task: the distinct `groups` shuffled (seeded) and dealt into `folds` parts; each part
    is a boolean mask of the rows whose task is held out (no task is on both sides of a split)."""
    groups = np.asarray(groups)
    distinct = pd.unique(groups)
    if folds < 2 or folds > len(distinct):
        raise ValueError(f"folds: expected 2 to {len(distinct)} (the number of tasks), got {folds}")
    order = np.random.default_rng(seed).permutation(len(distinct))
    return [np.isin(groups, distinct[order[k::folds]]) for k in range(folds)]
