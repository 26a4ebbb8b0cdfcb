"""Niche-targeted LMX: target cells, nearest elites and the labelled prompt, on hand-made grids."""

import numpy as np
import pandas as pd
import pytest

from evoforge.search.generation import plan_candidates
from evoforge.core.experts import Expert
from models.backend import SamplingSettings
from evoforge.search.targeting import (
    extreme_mask,
    frontier_mask,
    labelled_prompt,
    nearest_elites,
    niche_template,
    pick_target,
    target_genotype,
    target_weights,
)


def elites_1d(bins, qualities=None):
    qualities = qualities or [0.8] * len(bins)
    return pd.DataFrame({"cid": range(len(bins)), "text": [f"t{b}" for b in bins], "quality": qualities,
                         "bin_s": bins, "measure_s": [0.5] * len(bins)})


def test_frontier_is_the_empty_cells_next_to_filled_ones():
    filled = np.zeros(10, dtype=bool)
    filled[[4, 5]] = True
    assert np.flatnonzero(frontier_mask(filled)).tolist() == [3, 6]
    grid = np.zeros((4, 4), dtype=bool)
    grid[0, 0] = True  # a corner: its three neighbours, diagonal included
    assert sorted(map(tuple, np.argwhere(frontier_mask(grid)))) == [(0, 1), (1, 0), (1, 1)]


def test_extremes_are_the_first_and_last_bin_of_each_axis():
    assert np.flatnonzero(extreme_mask((5,))).tolist() == [0, 4]
    mask = extreme_mask((4, 4))
    assert mask.sum() == 12 and not mask[1:3, 1:3].any()  # the border of a 4 x 4 grid, not its inside


def test_an_empty_archive_is_aimed_only_at_the_extremes():
    weights = target_weights(np.full(20, np.nan))
    assert np.flatnonzero(weights).tolist() == [0, 19] and weights.sum() == pytest.approx(1.0)


def test_weights_favour_frontier_and_extreme_cells_and_weak_elites():
    quality = np.full(10, np.nan)
    quality[4], quality[5] = 0.2, 1.0  # a weak elite and a perfect one
    w = target_weights(quality)
    assert w[3] == w[6] == w[0] == w[9] > w[4] > 0  # frontier and extremes alike; a weak elite half as much
    assert w[5] == 0 and w[1] == w[2] == w[7] == w[8] == 0  # a perfect elite and cells far from everything
    assert w[4] == pytest.approx(0.5 * 0.8 * w[3])


def test_a_frontier_cell_at_an_extreme_counts_twice():
    quality = np.full(5, np.nan)
    quality[1] = 1.0
    w = target_weights(quality)
    assert w[0] == pytest.approx(2 * w[2]) and w[4] == pytest.approx(w[2])


def test_a_full_grid_of_perfect_elites_still_gives_a_target():
    w = target_weights(np.ones((2, 2)))
    assert np.allclose(w, 0.25)


def test_pick_target_follows_the_weights():
    rng = np.random.default_rng(0)
    elites = elites_1d([4, 5], [1.0, 1.0])
    picks = [pick_target(elites, ["s"], (10,), rng)[0] for _ in range(400)]
    assert set(picks) == {0, 3, 6, 9}
    assert all(60 < picks.count(c) < 140 for c in (0, 3, 6, 9))


def test_nearest_elites_come_nearest_last():
    rng = np.random.default_rng(0)
    elites = elites_1d([0, 9, 3, 7, 5])
    near = nearest_elites(elites, ["s"], (8,), 3, rng)
    assert near["bin_s"].tolist() == [5, 9, 7]  # distances 3, 1, 1: farthest first; 9 and 7 tie
    ties = {tuple(nearest_elites(elites, ["s"], (8,), 2, rng)["bin_s"]) for _ in range(50)}
    assert ties == {(9, 7), (7, 9)}  # a tie is broken at random


def test_labelled_prompt_names_each_niche_and_ends_on_the_target():
    prompt = labelled_prompt("Opinions.", "Here is an opinion:", [("A.", None), ("B.", "sentiment is clearly negative")],
                             "sentiment is very negative", "\n###\n")
    assert prompt == ("Opinions.\n\nHere is an opinion:\nA.\n###\n"
                      "Here is an opinion, one whose sentiment is clearly negative:\nB.\n###\n"
                      "Here is an opinion, one whose sentiment is very negative:\n")
    assert niche_template("Here is an opinion:", None) == "Here is an opinion:"


def test_target_genotype_tops_up_with_pool_items_then_uses_elites(opinions):
    rng = np.random.default_rng(0)
    pool = ["p1", "p2", "p3"]
    target, examples = target_genotype(opinions, pool, elites_1d([]).astype({"bin_s": int}), 3, rng)
    assert target[0] in (0, 19) and all(text in pool and wish is None for text, wish in examples)
    elites = pd.DataFrame({"cid": [1, 2, 3], "text": ["neg", "mid", "pos"], "quality": [0.9, 0.9, 0.9],
                           "bin_sentiment": [1, 10, 18], "measure_sentiment": [0.007, 0.6, 0.99]})
    target, examples = target_genotype(opinions, pool, elites, 3, rng)
    assert [text for text, _ in examples][-1] == ("neg" if target[0] < 10 else "pos")
    assert dict(examples)["neg"] == "sentiment is very negative" and dict(examples)["pos"] == "sentiment is very positive"


def test_target_search_plans_named_niches(opinions):
    rng = np.random.default_rng(1)
    expert = Expert(0, "smollm2", SamplingSettings(), "Opinions.", ["a", "b", "c"])
    elites = pd.DataFrame({"cid": [1, 2, 3], "text": ["x", "y", "z"], "quality": [0.9] * 3,
                           "bin_sentiment": [9, 10, 11], "measure_sentiment": [0.4, 0.6, 0.85]})
    plans = plan_candidates([expert], [0], 6, opinions, ["a", "b", "c"], elites, 0.5, rng, search="target")
    assert len(plans) == 6 and {p.mutation for p in plans} == {"target"}
    for plan in plans:
        assert sorted(plan.genotype) == ["x", "y", "z"] and not plan.chat
        assert plan.prompt.startswith("Opinions.\n\n") and plan.prompt.rstrip().endswith(":")
        assert ", one whose sentiment is " in plan.prompt.splitlines()[-1]


def test_target_zero_shot_names_the_target_without_examples(opinions):
    rng = np.random.default_rng(2)
    expert = Expert(0, "smollm2", SamplingSettings(), "Opinions.", ["a", "b", "c"])
    plans = plan_candidates([expert], [0], 8, opinions, ["a", "b", "c"], elites_1d([]).rename(
        columns={"bin_s": "bin_sentiment", "measure_s": "measure_sentiment"}), 0.5, rng, search="target_zero_shot")
    template = opinions.generator.template.rstrip(":")
    for plan in plans:
        assert plan.genotype == [] and plan.mutation == "target_zero_shot"
        # An empty archive: only the two extremes are aimed at.
        assert plan.prompt in (f"Opinions.\n\n{template}, one whose sentiment is very negative:\n",
                               f"Opinions.\n\n{template}, one whose sentiment is very positive:\n")
