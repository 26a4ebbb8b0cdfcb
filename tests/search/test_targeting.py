"""Niche-targeted LMX: target cells, nearest elites and the labelled prompt, on hand-made grids."""

import numpy as np
import pandas as pd
import pytest

from evoforge.search.generation import join_opening, plan_candidates, resolve_search
from evoforge.core.experts import Expert
from models.backend import SamplingSettings
from evoforge.search.targeting import (
    extreme_mask,
    frontier_mask,
    labelled_prompt,
    nearest_elites,
    niche_template,
    opening,
    pick_target,
    refine_plan,
    splice_plan,
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


def test_an_opening_keeps_whole_first_sentences_and_never_the_whole_text():
    rng = np.random.default_rng(0)
    text = "I hate peas. They taste like mud! Never again. Ever."
    assert {opening(text, rng) for _ in range(100)} == {
        "I hate peas.", "I hate peas. They taste like mud!", "I hate peas. They taste like mud! Never again."}


def test_a_one_sentence_parent_keeps_a_third_to_two_thirds_of_its_words():
    rng = np.random.default_rng(0)
    text = " ".join(f"w{i}" for i in range(12)) + "."
    openings = {opening(text, rng) for _ in range(200)}
    assert {len(o.split()) for o in openings} == {4, 5, 6, 7, 8}  # 12 words: 4..8 kept, every share drawn
    assert all(text.startswith(o + " ") for o in openings)
    assert opening("Too short", rng) == ""


def test_join_opening_puts_a_space_between_words_but_not_before_punctuation():
    assert join_opening("I love", "carrots.") == "I love carrots."
    assert join_opening("I love carrots", ", really.") == "I love carrots, really."
    assert join_opening("", "A text.") == "A text." and join_opening("I love", "") == "I love"


def test_splice_starts_from_the_elite_nearest_the_target(opinions):
    rng = np.random.default_rng(3)
    elites = pd.DataFrame({"cid": [1, 2, 3], "text": ["Peas are awful. I hate them.", "Fine food. It is ok.",
                                                      "Peas are great. I love them."],
                           "quality": [0.9] * 3, "bin_sentiment": [2, 10, 17], "measure_sentiment": [0.012, 0.6, 0.985]})
    for _ in range(30):
        target, start = splice_plan(opinions, elites, rng)
        nearest = "Peas are awful." if target[0] < 6 else ("Peas are great." if target[0] > 13 else None)
        if nearest:  # aimed beyond an extreme elite: that elite is the parent
            assert start == nearest
    assert splice_plan(opinions, elites.iloc[:0], rng)[1] == ""


def test_splice_search_splices_half_its_batch_and_aims_the_rest_at_their_targets_without_an_opening(opinions):
    rng = np.random.default_rng(4)
    expert = Expert(0, "smollm2", SamplingSettings(), "Opinions.", ["a", "b", "c"])
    empty = elites_1d([]).rename(columns={"bin_s": "bin_sentiment", "measure_s": "measure_sentiment"})
    first = plan_candidates([expert], [0], 4, opinions, ["a", "b", "c"], empty, 0.5, rng, search="splice")
    template = opinions.generator.template.rstrip(":")
    for plan in first:  # nothing to splice yet: new texts aimed at the extremes, as target_zero_shot writes them
        assert plan.mutation == "target_zero_shot" and plan.opening == "" and plan.prompt in (
            f"Opinions.\n\n{template}, one whose sentiment is very negative:\n",
            f"Opinions.\n\n{template}, one whose sentiment is very positive:\n")
    elites = pd.DataFrame({"cid": [1], "text": ["I never eat vegetables. They taste bitter to me."],
                           "quality": [0.9], "bin_sentiment": [3], "measure_sentiment": [0.02]})
    later = plan_candidates([expert], [0], 200, opinions, ["a", "b", "c"], elites, 0.5, rng, search="splice")
    spliced = [p for p in later if p.mutation == "splice"]
    assert 70 < len(spliced) < 130 and {p.mutation for p in later} == {"splice", "target_zero_shot"}
    for plan in spliced:
        assert plan.opening == "I never eat vegetables." and plan.genotype == []
        assert plan.prompt.endswith(", one whose sentiment is " + plan.prompt.split(", one whose sentiment is ")[-1])
        assert plan.prompt.endswith(":\n" + plan.opening)


def test_refine_shows_the_elites_nearest_the_target_and_asks_for_its_niche(opinions):
    rng = np.random.default_rng(5)
    texts = ["Peas are awful. I hate them.", "Beans are bad.", "Fine food. It is ok.", "Carrots are nice.",
             "Peas are great. I love them."]
    elites = pd.DataFrame({"cid": range(5), "text": texts, "quality": [0.9] * 5,
                           "bin_sentiment": [1, 3, 10, 15, 18], "measure_sentiment": [0.05, 0.15, 0.5, 0.8, 0.95]})
    expert = Expert(0, "smollm2", SamplingSettings(), "Opinions.", ["a", "b", "c"])
    plans = plan_candidates([expert], [0], 40, opinions, ["a", "b", "c"], elites, 0.5, rng, search="refine")
    assert {p.mutation for p in plans} == {"refine"} and all(p.chat for p in plans)
    for plan in plans:
        assert len(plan.genotype) == 3  # the three elites nearest the target are the parents
        assert plan.prompt.startswith(opinions.description) and plan.prompt.endswith(". Reply with the text only.")
        assert all(f"{i}. {parent}" in plan.prompt for i, parent in enumerate(plan.genotype, 1))
    bins = dict(zip(texts, elites["bin_sentiment"]))
    for _ in range(30):
        target, parents, prompt = refine_plan(opinions, elites, rng)
        distance = sorted(abs(b - target[0]) for b in bins.values())
        assert sorted(abs(bins[p] - target[0]) for p in parents) == distance[:3]  # the three nearest
        assert abs(bins[parents[-1]] - target[0]) == distance[0]  # the nearest last, before the instruction
    long = elites.assign(text=[t + " word" * 400 for t in texts])
    _, parents, prompt = refine_plan(opinions, long, rng)
    assert len(parents) == 3 and len(prompt) < 900 + 600  # the parents' share of the prompt stays bounded
    _, none, plain = refine_plan(opinions, elites.iloc[:0], rng)  # an empty archive: the niche instruction
    assert none == [] and "Write one whose sentiment is" in plain


def test_auto_search_splices_on_two_axes_and_mutates_few_shot_prompts_on_one(opinions):
    from evoforge.core.domain import load_domain

    stories = load_domain("stories")
    assert resolve_search("auto", stories) == "splice" and resolve_search("auto", opinions) == "lmx"
    assert resolve_search("zero_shot", stories) == "zero_shot"  # a named search is kept
    expert = Expert(0, "smollm2", SamplingSettings(), "Opinions.", ["a", "b", "c"])
    plans = plan_candidates([expert], [0], 8, opinions, ["a", "b", "c"], elites_1d([]).rename(
        columns={"bin_s": "bin_sentiment", "measure_s": "measure_sentiment"}), 0.5, np.random.default_rng(6))
    assert {p.mutation for p in plans} <= {"near", "replace", "none"}  # the default on one axis: LMX
