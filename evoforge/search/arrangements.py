"""Evolving arrangements (issue 18): whole experts evolve, not only their few-shot genotypes.

An expert's arrangement is its backend, its sampling settings, its system prompt (persona) and its few-shot items.
Every `cull_every` generations the `cull` experts with the lowest mean value over the last `window` generations are
replaced by children of the best two survivors: a mutated copy of one of them, or (with `crossover_rate`) a
uniform crossover of both, then mutated. A child gets a new expert id, its parents' ids and the generation it first
writes in (`born`); and the best value of the population, so the gating policy tries it soon, as it tries a tuned
model's expert that joins (valued at its parents' mean, a child was outpaced by experts whose values kept rising,
never picked, and culled next: measured in the first benchmark run).

Everything here is a plain function of its inputs and a seeded generator; the run applies it after a generation's
archive update (`cull_experts`), from the run's expert history, so a resumed run culls as the uninterrupted one.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from evoforge.core.config import ArrangementsConfig
from evoforge.core.experts import Expert, SamplingRanges
from models.backend import SamplingSettings

CONTINUOUS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
# The parts a crossover draws from one parent or the other, each on its own.
PARTS = ("backend", "system_prompt", "genotype", *CONTINUOUS, "max_new_tokens")
PARENTS = 2  # the best survivors that children descend from


# --- operators -----------------------------------------------------------------------------------------------


def mutate_expert(expert: Expert, ranges: SamplingRanges, personas: list[str], backends: list[str], pool: list[str],
                  rng: np.random.Generator, scale: float) -> Expert:
    """A mutated copy of `expert` (same id and lineage: the caller names the child). Each sampling setting moves by a
    Gaussian step of `scale` x its range and is clipped to the range; the system prompt (from `personas`), the
    backend (from `backends`) and one few-shot item (from `pool`: the seed pool and the texts the archive took) are
    each swapped for another with probability `scale`."""
    s = expert.sampling

    def step(value: float, lo_hi: tuple) -> float:
        lo, hi = lo_hi
        return round(float(np.clip(value + rng.normal(0.0, scale * (hi - lo)), lo, hi)), 3)

    lo, hi = ranges.max_new_tokens
    tokens = int(np.clip(round(s.max_new_tokens + rng.normal(0.0, scale * (hi - lo))), lo, hi))
    sampling = SamplingSettings(**{name: step(getattr(s, name), getattr(ranges, name)) for name in CONTINUOUS},
                                max_new_tokens=tokens)
    genotype = list(expert.genotype)
    if genotype and pool and rng.random() < scale:
        genotype[int(rng.integers(len(genotype)))] = pool[int(rng.integers(len(pool)))]
    return replace(expert, sampling=sampling, genotype=genotype,
                   system_prompt=_swapped(expert.system_prompt, personas, rng, scale),
                   backend=_swapped(expert.backend, backends, rng, scale))


def _swapped(current: str, choices: list[str], rng: np.random.Generator, probability: float) -> str:
    """With `probability`, another of `choices` than `current` (uniform); else `current`."""
    others = [c for c in dict.fromkeys(choices) if c != current]
    if others and rng.random() < probability:
        return others[int(rng.integers(len(others)))]
    return current


def crossover_experts(a: Expert, b: Expert, rng: np.random.Generator) -> Expert:
    """A uniform crossover: each part of `PARTS` (backend, system prompt, few-shot items as one set, each sampling
    setting) from `a` or `b` with equal chance. Identity, value and lineage are `a`'s (the caller names the child)."""
    parts = {}
    for name in PARTS:
        parent = a if rng.random() < 0.5 else b
        parts[name] = _part(parent, name)
    sampling = SamplingSettings(**{name: parts[name] for name in (*CONTINUOUS, "max_new_tokens")})
    return replace(a, backend=parts["backend"], system_prompt=parts["system_prompt"],
                   genotype=list(parts["genotype"]), sampling=sampling)


def _part(expert: Expert, name: str):
    return getattr(expert.sampling, name) if hasattr(expert.sampling, name) else getattr(expert, name)


# --- culling -------------------------------------------------------------------------------------------------


def cull_due(settings: ArrangementsConfig, generation: int) -> bool:
    """Whether the experts are culled after `generation` (after every `cull_every` generations)."""
    return settings.evolve and (generation + 1) % settings.cull_every == 0


def window_values(history: pd.DataFrame, generation: int, window: int) -> pd.Series:
    """Each expert's mean value over the generations (generation - window, generation] of `history` (rows with
    generation, expert_id, value; an expert younger than the window is averaged over the generations it lived)."""
    recent = history[(history["generation"] > generation - window) & (history["generation"] <= generation)]
    return recent.groupby("expert_id")["value"].mean()


@dataclass(frozen=True)
class Culling:
    """What one cull did: the population after it (survivors in their order, then the children), the culled experts
    (as they were after the generation) and the children."""

    experts: list[Expert]
    culled: list[Expert] = field(default_factory=list)
    children: list[Expert] = field(default_factory=list)


def cull(experts: list[Expert], history: pd.DataFrame, generation: int, settings: ArrangementsConfig,
         ranges: SamplingRanges, personas: list[str], backends: list[str], pool: list[str], rng: np.random.Generator,
         next_id: int) -> Culling:
    """Replace the `settings.cull` experts with the lowest mean value over the last `settings.window` generations of
    `history` (which holds the rows of `generation` too) by children of the best `PARENTS` survivors. Ties are
    broken toward culling the older expert (the smaller id). Children are numbered from `next_id`, born in
    `generation + 1`."""
    if settings.cull >= len(experts):
        raise ValueError(f"arrangements.cull: culling {settings.cull} of {len(experts)} experts leaves no parent; "
                         "set cull to at most the population minus 1")
    means = window_values(history, generation, settings.window)
    # Rank worst first: lowest window value, then the older (smaller id) one.
    ranked = sorted(experts, key=lambda e: (float(means.get(e.expert_id, e.value)), e.expert_id))
    culled_ids = {e.expert_id for e in ranked[:settings.cull]}
    survivors = [e for e in experts if e.expert_id not in culled_ids]
    best = ranked[::-1][:min(PARENTS, len(survivors))]  # the best first
    children, top = [], max(e.value for e in experts)
    for k in range(settings.cull):
        if len(best) >= 2 and rng.random() < settings.crossover_rate:
            a, b = (best[i] for i in rng.permutation(2))
            child, parents = crossover_experts(a, b, rng), [a, b]
        else:
            parent = best[int(rng.integers(len(best)))]
            child, parents = parent, [parent]
        child = mutate_expert(child, ranges, personas, backends, pool, rng, settings.mutation_scale)
        children.append(replace(child, expert_id=next_id + k, value=float(top), picks=0,
                                parent_ids=[p.expert_id for p in parents], born=generation + 1))
    culled = [e for e in experts if e.expert_id in culled_ids]
    return Culling(survivors + children, culled, children)


def next_expert_id(history: pd.DataFrame, experts: list[Expert]) -> int:
    """An id no expert of the run ever had (culled ones included): ids name experts in metrics and lineage."""
    ids = [e.expert_id for e in experts] + (history["expert_id"].tolist() if len(history) else [])
    return int(max(ids)) + 1 if ids else 0


def arrangement_metrics(experts: list[Expert], culled: list[Expert]) -> dict[str, float]:
    """A generation's arrangement metrics: experts culled after it, the population's mean value, and the spread
    (standard deviation over the population) of each sampling setting, distinct system prompts and backends."""
    metrics = {"arrangements/culled": len(culled),
               "arrangements/mean_value": float(np.mean([e.value for e in experts]))}
    for name in (*CONTINUOUS, "max_new_tokens"):
        metrics[f"arrangements/std_{name}"] = float(np.std([getattr(e.sampling, name) for e in experts]))
    metrics["arrangements/system_prompts"] = len({e.system_prompt for e in experts})
    metrics["arrangements/backends"] = len({e.backend for e in experts})
    return metrics
