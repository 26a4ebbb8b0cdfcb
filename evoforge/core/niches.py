"""A domain's niches in words: what a generator is asked for when the search (or a tuned model) aims at one cell."""

import numpy as np

from evoforge.core.domain import Axis, Domain


def _degree(strength: float) -> str:
    if strength >= 0.95:
        return "very"
    if strength >= 0.8:
        return "clearly"
    return "somewhat"


def axis_phrase(axis: Axis, value: float) -> str:
    """'clearly positive' for P(first label) = 0.85; 'very negative' for 0.02."""
    label, strength = (axis.labels[0], value) if value >= 0.5 else (axis.labels[1], 1.0 - value)
    return f"{_degree(strength)} {label}"


def bin_centre(axis: Axis, index: int) -> float:
    edges = [0.0, *axis.bins, 1.0]
    return (edges[index] + edges[index + 1]) / 2


def niche_wish(domain: Domain, bin_indices: list[int]) -> str:
    """One niche in words: 'sentiment is very negative', 'genre is clearly horror and whose ending is ...'."""
    wishes = [f"{axis.name} is {axis_phrase(axis, bin_centre(axis, int(b)))}" for axis, b in zip(domain.axes, bin_indices)]
    return " and whose ".join(wishes)


def niche_prompt(domain: Domain, bin_indices: list[int]) -> str:
    """The instruction that asks for one niche of the domain's grid."""
    return f"{domain.description} Write one whose {niche_wish(domain, bin_indices)}. Reply with the text only."


def random_niche(domain: Domain, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(axis.num_bins)) for axis in domain.axes]
