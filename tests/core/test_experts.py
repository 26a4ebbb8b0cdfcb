import numpy as np
import pytest

from evoforge.core.archive import IMPROVED, NEW_CELL, NOT_ADDED
from evoforge.core.experts import (
    Expert,
    RewardScheme,
    SamplingRanges,
    exploration_rate,
    pick_experts,
    random_experts,
    update_value,
)


def test_value_update_is_the_classic_rule():
    values = np.array([0.2, 1.0, 0.0])
    updated = update_value(values, 0, reward=0.5, learning_rate=0.1, discount=0.9)
    assert updated[0] == pytest.approx(0.2 + 0.1 * (0.5 + 0.9 * 1.0 - 0.2))
    assert updated[1:].tolist() == [1.0, 0.0] and values[0] == 0.2  # others untouched, input not mutated


def test_exploration_rate_decays_to_its_floor():
    rates = [exploration_rate(g, start=0.5, decay=0.5, minimum=0.1) for g in range(5)]
    assert rates == [0.5, 0.25, 0.125, 0.1, 0.1]


def test_greedy_picks_the_best_experts_and_exploration_spreads_picks():
    values = np.array([0.1, 0.9, 0.5, 0.0])
    rng = np.random.default_rng(0)
    assert pick_experts(values, 2, epsilon=0.0, rng=rng) == [1, 2]
    counts = np.zeros(4)
    for _ in range(2000):
        for i in pick_experts(values, 1, epsilon=1.0, rng=rng):
            counts[i] += 1
    assert counts.min() > 400  # uniform: ~500 each
    picks = pick_experts(values, 10, epsilon=0.3, rng=rng)
    assert sorted(picks) == [0, 1, 2, 3]  # distinct, capped at the population


def test_reward_is_the_mean_outcome_of_an_experts_candidates():
    scheme = RewardScheme(new_cell=1.0, improved=0.5, not_added=0.0)
    assert scheme.reward(np.array([NEW_CELL, IMPROVED, NOT_ADDED, NOT_ADDED])) == pytest.approx(0.375)
    assert scheme.reward(np.array([], dtype=int)) == 0.0


def test_random_experts_stay_inside_the_ranges_and_round_trip():
    ranges = SamplingRanges(temperature=(0.5, 0.6), top_p=(0.9, 0.95), max_new_tokens=(10, 12))
    experts = random_experts(20, ["m1", "m2"], ranges, ["sys"], ["a", "b", "c", "d"], np.random.default_rng(1))
    assert {e.backend for e in experts} == {"m1", "m2"}
    for e in experts:
        assert 0.5 <= e.sampling.temperature <= 0.6 and 0.9 <= e.sampling.top_p <= 0.95
        assert 10 <= e.sampling.max_new_tokens <= 12 and len(e.genotype) == 3
        assert Expert.from_row(e.to_row()) == e
