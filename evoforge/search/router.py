"""The router (issue 18; seed 000's gating network): which expert should write for *this* input, from the credit
experts earned on similar inputs.

The epsilon-greedy gating policy keeps one value per expert; the manager (evoforge.search.manager) keeps a bandit
per niche, so a niche it has not tried starts from nothing. The router generalises across inputs: an expert's
score for an input is the kernel-weighted mean of the rewards it earned on earlier inputs, weighted by
exp(-d^2 / 2h^2) with d the distance between the inputs (a run: target cells, in bins per axis; `ask`: tasks, their
unit-length MiniLM embeddings), shrunk toward the expert's mean reward over all inputs by `prior` pseudo-rewards
(an expert with no credit nearby scores its overall mean; with no credit at all, 0). The picks are then
epsilon-greedy over these scores (`pick_experts`, the gating policy's own rule and exploration schedule), so routed
and epsilon-greedy runs differ only in what the scores are conditioned on.

Why a kernel and not a fitted softmax / logistic gate: a run records a few hundred credited picks, too few to fit
a model per expert reliably; credit is not monotone in the coordinates (an expert may win the middle cells of an
axis and lose both ends, which one logistic unit per expert cannot express); and a kernel estimate is exact from
the record, needs no training step and no random initialisation, so a resumed run rebuilt from its Parquet routes
as the uninterrupted one would. Its one setting, the bandwidth, says how far credit spreads (1 bin: a neighbouring
cell counts 0.61, two cells away 0.14).
"""

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from evoforge.core.domain import Domain
from evoforge.core.experts import Expert, pick_experts
from evoforge.search.generation import Plan
from evoforge.search.manager import draw_target, target_plan

ROUTER_COLUMNS = ["router_niche", "router_expert", "router_score", "router_reward"]


def kernel_credit(inputs: np.ndarray, experts: np.ndarray, rewards: np.ndarray, queries: np.ndarray,
                  n_experts: int, bandwidth: float, prior: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Scores (queries x experts): each expert's kernel-weighted mean reward near each query, shrunk toward its
    overall mean reward by `prior` pseudo-rewards; and the kernel weight behind each score (the effective number of
    credited picks nearby). `inputs` (n x d), `experts` (n ints) and `rewards` (n) are the credited picks."""
    queries = np.atleast_2d(np.asarray(queries, dtype=float))
    inputs = np.asarray(inputs, dtype=float).reshape(-1, queries.shape[1])
    rewards = np.asarray(rewards, dtype=float)
    onehot = np.zeros((len(inputs), n_experts))
    onehot[np.arange(len(inputs)), np.asarray(experts, dtype=int)] = 1.0
    counts, sums = onehot.sum(axis=0), onehot.T @ rewards
    overall = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    d2 = ((queries[:, None, :] - inputs[None, :, :]) ** 2).sum(axis=2)
    kernel = np.exp(-d2 / (2 * bandwidth**2))
    weight = kernel @ onehot
    score = (kernel @ (onehot * rewards[:, None]) + prior * overall) / (weight + prior)
    return score, weight


@dataclass(frozen=True)
class Router:
    """The credited picks so far (input, expert, reward) and how credit spreads between inputs."""

    n_experts: int
    inputs: np.ndarray  # n x d
    experts: np.ndarray  # n
    rewards: np.ndarray  # n
    bandwidth: float = 1.0
    prior: float = 1.0

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return kernel_credit(self.inputs, self.experts, self.rewards, queries, self.n_experts, self.bandwidth,
                             self.prior)[0]

    def route(self, query: np.ndarray, k: int, epsilon: float, rng: np.random.Generator) -> tuple[list[int], np.ndarray]:
        """The `k` experts for one input (epsilon-greedy over its scores) and the scores."""
        scores = self.scores(query)[0]
        return pick_experts(scores, k, epsilon, rng), scores

    def best(self, queries: np.ndarray) -> np.ndarray:
        """The highest-scored expert per query (ties: the lowest id), for the 'share of picks to the best' metric."""
        return np.argmax(self.scores(queries), axis=1)


# --- runs: the input is a target niche ------------------------------------------------------------------------------


def niche_coordinates(niches, shape: tuple[int, ...]) -> np.ndarray:
    """Flat cell indices as bin coordinates (n x axes), the space the run's kernel measures distance in."""
    niches = np.asarray(niches, dtype=int)
    if not len(niches):
        return np.zeros((0, len(shape)))
    return np.stack(np.unravel_index(niches, shape), axis=1).astype(float)


def run_router(history: pd.DataFrame, n_experts: int, shape: tuple[int, ...], bandwidth: float,
               prior: float = 1.0) -> Router:
    """The router after the credited rows of a run's record (`router_niche`, `router_expert`, `router_reward`);
    picks of an expert that no longer exists are ignored."""
    credited = history[history["router_reward"].notna()] if len(history) else history
    if len(credited):
        credited = credited[credited["router_expert"].astype(int) < n_experts]
    niches = credited["router_niche"].to_numpy(dtype=int) if len(credited) else np.zeros(0, dtype=int)
    experts = credited["router_expert"].to_numpy(dtype=int) if len(credited) else np.zeros(0, dtype=int)
    rewards = credited["router_reward"].to_numpy(dtype=float) if len(credited) else np.zeros(0)
    return Router(n_experts, niche_coordinates(niches, shape), experts, rewards, bandwidth, prior)


def router_plans(router: Router, experts: list[Expert], batch_size: int, domain: Domain, pool: list[str],
                 elites: pd.DataFrame, shots: int, epsilon: float,
                 rng: np.random.Generator) -> tuple[list[Plan], dict[str, list]]:
    """`batch_size` plans: per candidate a target niche (drawn as `search: target` and the manager draw it), then
    the expert the router picks for it. Returns the plans and their `router_niche`, `router_expert` and
    `router_score` columns (the picked expert's score at the time)."""
    plans, columns = [], {"router_niche": [], "router_expert": [], "router_score": []}
    for _ in range(batch_size):
        niche, target, examples = draw_target(domain, pool, elites, shots, rng)
        (pick,), scores = router.route(niche_coordinates([niche], domain.grid_shape), 1, epsilon, rng)
        plans.append(target_plan(experts[pick], domain, target, examples))
        columns["router_niche"].append(niche)
        columns["router_expert"].append(experts[pick].expert_id)
        columns["router_score"].append(float(scores[pick]))
    return plans, columns


def routing_metrics(router: Router, picks: pd.DataFrame, shape: tuple[int, ...]) -> dict[str, float]:
    """A generation's routing (`router`: as the generation started; `picks`: its credited router columns): the
    entropy of its picks over experts (normalised: 1 spreads evenly, 0 sends all to one expert), the share of picks
    that went to the expert the router now (with this generation's credit) rates best at the pick's niche, how many
    experts are best somewhere among the niches picked (specialists), and the mean reward."""
    if not len(picks):
        return {}
    experts = picks["router_expert"].to_numpy(dtype=int)
    coordinates = niche_coordinates(picks["router_niche"], shape)
    router_after = replace(router, inputs=np.concatenate([router.inputs, coordinates]),
                           experts=np.concatenate([router.experts, experts]),
                           rewards=np.concatenate([router.rewards, picks["router_reward"].to_numpy(dtype=float)]))
    share = np.bincount(experts, minlength=router_after.n_experts) / len(experts)
    nonzero = share[share > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / np.log(router_after.n_experts)) \
        if router_after.n_experts > 1 else 0.0
    best = router_after.best(coordinates)
    return {"router/entropy": entropy, "router/best_share": float((best == experts).mean()),
            "router/specialists": float(len(set(best.tolist()))),
            "router/reward": float(picks["router_reward"].mean())}
