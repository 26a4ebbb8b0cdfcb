"""Prioritized replay for fine-tuning data (`finetune.replay: prioritized`; seed 002, issue 16).

Each training example (an elite) gets a priority p_i from its quality, or from its advantage (its quality minus
the mean quality of every judged candidate in its cell: how much better it is than what the run usually wrote
there). As in prioritized experience replay (Schaul et al. 2016), example i is drawn with probability
P(i) = (p_i + eps)^alpha / sum_k (p_k + eps)^alpha, and a draw's loss is corrected by the importance weight
w_i = (N P(i))^-beta / max_k w_k (beta = 1 undoes the priority's bias completely, 0 not at all).

The trainer (models.finetune) weighs every token alike, so the correction is applied as resampling: drawing by P
and weighting each draw's loss by w has the same expected gradient as drawing by q_i = P(i) w_i / sum_k P(k) w_k
unweighted. The training split is therefore drawn by q (with replacement, as many draws as it has examples, so a
prioritized fine-tune takes as many steps as a uniform one); the held-out split is split off first, before any
draw, and stays as it was, so no drawn copy of a training example leaks into it. 'uniform' (the default) is
today's data: every elite once.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

EPS = 0.01  # keeps a zero-priority example drawable (PER's epsilon)
DRAW_COLUMN = "replay_draw"  # an examples frame with this column is resampled by it after the held-out split


@dataclass(frozen=True)
class Replay:
    """P(i), the importance weights w_i and the resampling distribution q_i (see the module's docstring)."""

    probability: np.ndarray
    weight: np.ndarray
    draw: np.ndarray


def prioritize(priorities: np.ndarray, alpha: float, beta: float) -> Replay:
    p = np.asarray(priorities, dtype=float)
    if len(p) == 0:
        return Replay(p, p, p)
    if np.isnan(p).any() or (p < 0).any():
        raise ValueError("replay: priorities must be non-negative numbers (quality or advantage clipped at 0)")
    scaled = (p + EPS) ** alpha
    probability = scaled / scaled.sum()
    weight = (len(p) * probability) ** -beta
    weight = weight / weight.max()
    draw = probability * weight
    return Replay(probability, weight, draw / draw.sum())


def advantage(elites: pd.DataFrame, candidates: pd.DataFrame, archive) -> np.ndarray:
    """Each elite's quality minus the mean quality of the judged candidates of its cell, clipped at 0."""
    judged = candidates[candidates["valid"] & candidates["quality"].notna()]
    measures = judged[[f"measure_{a}" for a in archive.axis_names]].to_numpy(dtype=float)
    cells = pd.Series(judged["quality"].to_numpy(dtype=float)).groupby(archive.cell_index(measures)).mean()
    mean = elites["cell"].map(cells).fillna(elites["quality"]).to_numpy(dtype=float)
    return np.clip(elites["quality"].to_numpy(dtype=float) - mean, 0, None)


def replay_examples(examples: pd.DataFrame, elites: pd.DataFrame, candidates: pd.DataFrame, archive,
                    settings) -> pd.DataFrame:
    """`examples` (one per elite, in the elites' order) with the replay columns (`replay_priority`,
    `replay_probability`, `replay_weight`, `replay_draw`) when `settings.replay` is 'prioritized'; unchanged
    when 'uniform'."""
    if settings.replay == "uniform":
        return examples
    priority = (elites["quality"].to_numpy(dtype=float) if settings.replay_priority == "quality"
                else advantage(elites, candidates, archive))
    replay = prioritize(np.clip(priority, 0, None), settings.replay_alpha, settings.replay_beta)
    return examples.assign(replay_priority=priority, replay_probability=replay.probability,
                           replay_weight=replay.weight, **{DRAW_COLUMN: replay.draw})


def draw_indices(draw: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` indices drawn with replacement by the distribution `draw` (renormalised), seeded."""
    draw = np.asarray(draw, dtype=float)
    return np.random.default_rng([seed, 16]).choice(len(draw), size=size, replace=True, p=draw / draw.sum())
