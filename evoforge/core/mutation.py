"""LMX mutations of a few-shot genotype.

- `replace`: swap one few-shot item for a random pool item.
- `near`: take a random elite as parent and fill the few-shot prompt with elites drawn with weight 1 / (1 + d^3),
  d being the grid distance (in bins) to the parent's cell, so the offspring is steered toward that region.
"""

import numpy as np
import pandas as pd

def replace(genotype: list[str], pool: list[str], rng: np.random.Generator) -> list[str]:
    child = list(genotype)
    child[int(rng.integers(len(child)))] = pool[int(rng.integers(len(pool)))]
    return child


def near_weights(bins: np.ndarray, parent: int) -> np.ndarray:
    """Sampling weights 1 / (1 + d^3) over elites, d = Euclidean grid distance (in bins) to the parent elite."""
    d = np.linalg.norm(bins - bins[parent], axis=1)
    return 1.0 / (1.0 + d**3)


def near(elites: pd.DataFrame, axis_names: list[str], shots: int, rng: np.random.Generator) -> list[str]:
    bins = elites[[f"bin_{a}" for a in axis_names]].to_numpy(dtype=float)
    parent = int(rng.integers(len(elites)))
    w = near_weights(bins, parent)
    picks = rng.choice(len(elites), size=shots, replace=len(elites) < shots, p=w / w.sum())
    texts = elites["text"].tolist()
    return [texts[i] for i in picks]


def mutate(
    genotype: list[str],
    pool: list[str],
    elites: pd.DataFrame,
    axis_names: list[str],
    near_probability: float,
    rng: np.random.Generator,
) -> tuple[str, list[str]]:
    """One offspring genotype and the mutation's name. `near` needs at least as many elites as shots."""
    if len(elites) >= len(genotype) and rng.random() < near_probability:
        return "near", near(elites, axis_names, len(genotype), rng)
    return "replace", replace(genotype, pool, rng)
