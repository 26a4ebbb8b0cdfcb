"""The manager of a manager/worker search (seed 002's hierarchy, issue 16): for each candidate it draws a target
niche (a cell of the grid, weighted toward the frontier as niche targeting does), and a bandit over
(strategy, expert) arms with credit kept per niche picks who writes it; the workers (the experts, with that
strategy) write. An arm's reward is the archive improvement its candidate made: its quality minus the quality of
the elite it replaced (the whole quality for a new cell), 0 when it did not enter.

Credit is per niche because what works differs between cells (a neutral text is easy, an extreme one is not). The
bandit is rebuilt each generation from the run's record (the `manager_niche`, `manager_arm` and `manager_reward`
columns), so a resumed run picks as the uninterrupted one would.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evoforge.core.domain import Domain
from evoforge.core.experts import Expert
from evoforge.core.niches import niche_wish
from evoforge.search.generation import Plan
from evoforge.search.targeting import labelled_prompt, target_genotype


@dataclass(frozen=True)
class Arm:
    strategy: str
    expert_id: int

    @property
    def name(self) -> str:
        return f"{self.strategy}/{self.expert_id}"


def arms_of(strategies: list[str], experts: list[Expert]) -> list[Arm]:
    return [Arm(s, e.expert_id) for s in strategies for e in experts]


@dataclass
class NicheBandit:
    """A bandit per niche over the same arms (by name). 'ucb1': mean + c sqrt(2 ln n / n_arm), an untried arm
    first (a random one of them); 'thompson': the arm with the largest draw from Beta(1 + sum r, 1 + n - sum r),
    rewards clipped to [0, 1]. Picks made in the current batch count as tries (not as rewards) until `update`, so
    one batch spreads over the untried arms instead of giving one niche's every slot to the same arm."""

    arms: list[str]
    policy: str = "ucb1"
    exploration: float = 1.0
    counts: dict[int, np.ndarray] = field(default_factory=dict)
    sums: dict[int, np.ndarray] = field(default_factory=dict)
    pending: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        if self.policy not in ("ucb1", "thompson"):
            raise ValueError(f"manager.policy: expected 'ucb1' or 'thompson', got {self.policy!r}")
        if not self.arms:
            raise ValueError("manager.strategies: expected at least one arm")

    def _row(self, table: dict, niche: int) -> np.ndarray:
        return table.setdefault(niche, np.zeros(len(self.arms)))

    def update(self, niche: int, arm: str, reward: float) -> None:
        """Credit `arm` with `reward` in `niche` (an arm not among today's arms, e.g. a removed expert, is ignored)."""
        if arm not in self.arms:
            return
        j = self.arms.index(arm)
        pending = self._row(self.pending, niche)
        pending[j] = max(pending[j] - 1, 0)  # a pick's reward has arrived: it no longer counts as pending
        self._row(self.counts, niche)[j] += 1
        self._row(self.sums, niche)[j] += reward

    def pick(self, niche: int, rng: np.random.Generator) -> str:
        n = self._row(self.counts, niche) + self._row(self.pending, niche)
        sums = self._row(self.sums, niche)
        if self.policy == "ucb1":
            untried = np.flatnonzero(n == 0)
            if len(untried):
                j = int(rng.choice(untried))
            else:
                # The pending picks' rewards are unknown: their share of the mean is the arm's mean so far.
                done = self._row(self.counts, niche)
                mean = np.where(done > 0, sums / np.maximum(done, 1), 0.0)
                bonus = self.exploration * np.sqrt(2 * math.log(n.sum()) / n)
                j = int(np.argmax(mean + bonus))
        else:
            done = self._row(self.counts, niche)
            wins = np.clip(sums, 0, done)
            j = int(np.argmax(rng.beta(1 + wins, 1 + done - wins)))
        self._row(self.pending, niche)[j] += 1
        return self.arms[j]

    def settle(self) -> None:
        """Forget the pending picks (a run credits them next generation, in a bandit rebuilt from its record)."""
        self.pending = {}

    def mean_reward(self, niche: int) -> np.ndarray:
        counts, sums = self._row(self.counts, niche), self._row(self.sums, niche)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    @classmethod
    def from_history(cls, arms: list[str], history: pd.DataFrame, policy: str = "ucb1",
                     exploration: float = 1.0) -> "NicheBandit":
        """The bandit after the credited rows of `history` (columns manager_niche, manager_arm, manager_reward)."""
        bandit = cls(arms, policy, exploration)
        if len(history):
            credited = history[history["manager_reward"].notna()]
            for niche, arm, reward in zip(credited["manager_niche"], credited["manager_arm"],
                                          credited["manager_reward"]):
                bandit.update(int(niche), str(arm), float(reward))
        return bandit


def manager_plans(bandit: NicheBandit, arms: list[Arm], experts: list[Expert], batch_size: int, domain: Domain,
                  pool: list[str], elites: pd.DataFrame, shots: int,
                  rng: np.random.Generator) -> tuple[list[Plan], list[Arm], list[int]]:
    """`batch_size` plans: per candidate a target niche (as `search: target` draws it, with the elites nearest to
    it as named examples), then the arm the bandit picks for that niche. Returns the plans, their arms and their
    niches (flat cell indices)."""
    by_name = {a.name: a for a in arms}
    by_id = {e.expert_id: e for e in experts}
    plans, picked, niches = [], [], []
    for _ in range(batch_size):
        niche, target, examples = draw_target(domain, pool, elites, shots, rng)
        arm = by_name[bandit.pick(niche, rng)]
        plans.append(target_plan(by_id[arm.expert_id], domain, target, examples))
        picked.append(arm)
        niches.append(niche)
    bandit.settle()
    return plans, picked, niches


def draw_target(domain: Domain, pool: list[str], elites: pd.DataFrame, shots: int,
                rng: np.random.Generator) -> tuple[int, tuple[int, ...], list[tuple[str, str | None]]]:
    """A target niche as `search: target` draws it: its flat cell index, its bins and its few-shot examples (the
    elites nearest to it). The manager and the router (evoforge.search.router) both aim each candidate so."""
    target, examples = target_genotype(domain, pool, elites, shots, rng)
    return int(np.ravel_multi_index(target, domain.grid_shape)), target, examples


def target_plan(expert: Expert, domain: Domain, target: tuple[int, ...],
                examples: list[tuple[str, str | None]]) -> Plan:
    """`expert`'s plan for a drawn target: its system prompt over the labelled examples, the open line naming the
    target's niche."""
    g = domain.generator
    prompt = labelled_prompt(expert.system_prompt, g.template, examples, niche_wish(domain, list(target)),
                             g.separator)
    return Plan(expert, "target", [text for text, _ in examples], prompt)


def archive_improvement(quality: np.ndarray, inserted: np.ndarray, cells: np.ndarray,
                        before: np.ndarray) -> np.ndarray:
    """Each candidate's improvement of the archive: quality minus the quality its cell held before the generation
    (`before`: the quality grid, NaN where empty), for the inserted ones; 0 for the rest."""
    previous = np.nan_to_num(before.ravel()[cells], nan=0.0)
    return np.where(inserted, np.asarray(quality, dtype=float) - previous, 0.0)
