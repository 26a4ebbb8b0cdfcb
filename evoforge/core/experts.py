"""Experts (a backend plus sampling settings plus a few-shot genotype) and the gating policy that picks them.

The policy is epsilon-greedy over learned expert values, with an exploration rate that decays each generation.
Values follow the classic update `v += lr * (r + gamma * max(v) - v)`, where the reward is what the expert's
candidates did to the archive.
"""

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from evoforge.core.archive import IMPROVED, NEW_CELL
from models.backend import SamplingSettings


@dataclass
class Expert:
    expert_id: int
    backend: str  # model name or path, resolved by models.resolve
    sampling: SamplingSettings
    system_prompt: str
    genotype: list[str]  # the few-shot items
    value: float = 0.0
    picks: int = 0
    # Lineage (evolving arrangements, evoforge.search.arrangements): the experts it descends from (none for the
    # founders and for a tuned model's expert) and the first generation it can write in.
    parent_ids: list[int] = field(default_factory=list)
    born: int = 0

    def to_row(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k != "sampling"}
        row.update(asdict(self.sampling))
        return row

    @classmethod
    def from_row(cls, row: dict) -> "Expert":
        sampling = SamplingSettings(
            temperature=float(row["temperature"]),
            top_p=float(row["top_p"]),
            frequency_penalty=float(row["frequency_penalty"]),
            presence_penalty=float(row["presence_penalty"]),
            max_new_tokens=int(row["max_new_tokens"]),
        )
        return cls(
            expert_id=int(row["expert_id"]),
            backend=row["backend"],
            sampling=sampling,
            system_prompt=row["system_prompt"],
            genotype=list(row["genotype"]),
            value=float(row["value"]),
            picks=int(row["picks"]),
            # Rows written before lineage was recorded have neither column (or NaN where a file mixes both).
            parent_ids=[int(p) for p in _listed(row.get("parent_ids"))],
            born=0 if pd.isna(row.get("born", 0)) else int(row.get("born", 0)),
        )


def _listed(value) -> list:
    """A Parquet list cell as a list: pyarrow gives arrays, a missing column gives None or NaN."""
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else []


@dataclass(frozen=True)
class SamplingRanges:
    temperature: tuple[float, float] = (0.7, 1.2)
    top_p: tuple[float, float] = (0.8, 1.0)
    frequency_penalty: tuple[float, float] = (0.0, 0.5)
    presence_penalty: tuple[float, float] = (0.0, 0.5)
    max_new_tokens: tuple[int, int] = (48, 64)

    def draw(self, rng: np.random.Generator) -> SamplingSettings:
        def uniform(lo_hi):
            return round(float(rng.uniform(*lo_hi)), 3)

        return SamplingSettings(
            temperature=uniform(self.temperature),
            top_p=uniform(self.top_p),
            frequency_penalty=uniform(self.frequency_penalty),
            presence_penalty=uniform(self.presence_penalty),
            max_new_tokens=int(rng.integers(self.max_new_tokens[0], self.max_new_tokens[1] + 1)),
        )


def random_experts(
    n: int,
    backends: list[str],
    ranges: SamplingRanges,
    system_prompts: list[str],
    pool: list[str],
    rng: np.random.Generator,
    shots: int = 3,
) -> list[Expert]:
    """`n` experts with random sampling settings, backends, system prompts and `shots`-item genotypes."""
    return [
        Expert(
            expert_id=i,
            backend=backends[i % len(backends)],
            sampling=ranges.draw(rng),
            system_prompt=system_prompts[int(rng.integers(len(system_prompts)))],
            genotype=[pool[j] for j in rng.choice(len(pool), size=shots, replace=len(pool) < shots)],
        )
        for i in range(n)
    ]


# --- gating policy ---------------------------------------------------------------------------------------------


def exploration_rate(generation: int, start: float, decay: float, minimum: float) -> float:
    """Epsilon for a generation: geometric decay from `start`, never below `minimum`."""
    return max(minimum, start * decay**generation)


def pick_experts(values: np.ndarray, k: int, epsilon: float, rng: np.random.Generator) -> list[int]:
    """Pick `k` distinct experts: each slot explores (uniform among the rest) with probability epsilon, else
    takes the highest-valued remaining expert (ties broken at random)."""
    values = np.asarray(values, dtype=float)
    remaining = list(range(len(values)))
    picked = []
    for _ in range(min(k, len(values))):
        if rng.random() < epsilon:
            choice = remaining[int(rng.integers(len(remaining)))]
        else:
            best = max(values[i] for i in remaining)
            ties = [i for i in remaining if values[i] == best]
            choice = ties[int(rng.integers(len(ties)))]
        picked.append(choice)
        remaining.remove(choice)
    return picked


@dataclass(frozen=True)
class RewardScheme:
    new_cell: float = 1.0
    improved: float = 0.5
    not_added: float = 0.0

    def reward(self, statuses: np.ndarray) -> float:
        """Mean reward over one expert's candidates in one generation (0 when it wrote none)."""
        statuses = np.asarray(statuses)
        if statuses.size == 0:
            return 0.0
        r = np.where(statuses == NEW_CELL, self.new_cell, np.where(statuses == IMPROVED, self.improved, self.not_added))
        return float(r.mean())


def update_value(values: np.ndarray, i: int, reward: float, learning_rate: float, discount: float) -> np.ndarray:
    """The classic value update for expert i: v_i += lr * (r + gamma * max(v) - v_i). Returns a new array."""
    values = np.asarray(values, dtype=float).copy()
    values[i] += learning_rate * (reward + discount * values.max() - values[i])
    return values

