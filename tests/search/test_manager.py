"""The manager's bandit over (strategy, expert) arms with credit per niche (evoforge.search.manager)."""

import numpy as np
import pandas as pd
import pytest

from evoforge.search.manager import NicheBandit, archive_improvement


def play(bandit: NicheBandit, chance: dict, niche: int, rounds: int, rng) -> list[str]:
    """Pick and credit `rounds` times in `niche`; the reward is 1 with the picked arm's chance, else 0."""
    picks = []
    for _ in range(rounds):
        arm = bandit.pick(niche, rng)
        bandit.update(niche, arm, float(rng.random() < chance[arm]))
        picks.append(arm)
    return picks


@pytest.mark.parametrize("policy", ["ucb1", "thompson"])
def test_the_bandit_converges_to_the_better_arm(policy):
    rng = np.random.default_rng(0)
    chance = {"sample/0": 0.2, "tot/0": 0.8, "beam/0": 0.3}
    bandit = NicheBandit(list(chance), policy)
    picks = play(bandit, chance, niche=7, rounds=400, rng=rng)
    assert picks[-100:].count("tot/0") >= 80
    assert np.nanargmax(bandit.mean_reward(7)) == 1


def test_credit_is_kept_per_niche():
    rng = np.random.default_rng(1)
    arms = ["sample/0", "tot/0"]
    bandit = NicheBandit(arms, "ucb1")
    first = play(bandit, {"sample/0": 0.9, "tot/0": 0.1}, niche=0, rounds=300, rng=rng)
    assert bandit.counts.get(1) is None  # niche 1 has no credit yet: niche 0's rounds did not touch it
    second = play(bandit, {"sample/0": 0.1, "tot/0": 0.9}, niche=1, rounds=300, rng=rng)
    assert np.nanargmax(bandit.mean_reward(0)) == 0 and np.nanargmax(bandit.mean_reward(1)) == 1
    assert first[-100:].count("sample/0") >= 80 and second[-100:].count("tot/0") >= 80


def test_a_batch_tries_every_untried_arm_before_repeating_one():
    bandit = NicheBandit(["a", "b", "c"], "ucb1")
    rng = np.random.default_rng(2)
    assert sorted(bandit.pick(3, rng) for _ in range(3)) == ["a", "b", "c"]  # pending picks count as tries
    bandit.settle()
    assert bandit.counts[3].sum() == 0  # no reward arrived: nothing was credited


def test_the_bandit_is_rebuilt_from_a_runs_record():
    history = pd.DataFrame({"manager_niche": [0, 0, 1, 2], "manager_arm": ["a", "b", "a", "gone/9"],
                            "manager_reward": [0.5, 0.0, 0.25, 1.0]})
    history.loc[len(history)] = [0, "a", np.nan]  # written but not yet credited: ignored
    bandit = NicheBandit.from_history(["a", "b"], history)
    np.testing.assert_allclose(bandit.counts[0], [1, 1])
    np.testing.assert_allclose(bandit.mean_reward(0), [0.5, 0.0])
    np.testing.assert_allclose(bandit.mean_reward(1), [0.25, np.nan])
    assert 2 not in bandit.counts  # an arm no longer offered (an expert gone) is not credited
    with pytest.raises(ValueError, match="manager.policy"):
        NicheBandit(["a"], "greedy")


def test_the_reward_is_the_archive_improvement():
    before = np.array([[np.nan, 0.4], [0.7, np.nan]])  # quality per cell before the generation
    quality = np.array([0.6, 0.9, 0.5, 0.8])
    inserted = np.array([True, True, False, True])
    cells = np.array([0, 1, 2, 1])  # a new cell, an improved one, one that did not enter
    np.testing.assert_allclose(archive_improvement(quality, inserted, cells, before), [0.6, 0.5, 0.0, 0.4])
