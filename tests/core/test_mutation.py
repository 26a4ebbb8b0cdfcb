import numpy as np
import pandas as pd

from evoforge.core.mutation import mutate, near, near_weights, replace
from evoforge.core.prompts import cut_at_separator, ends_sentence, few_shot_prompt, trim_to_last_sentence


def test_replace_swaps_exactly_one_item_for_a_pool_item():
    rng = np.random.default_rng(0)
    genotype, pool = ["a", "b", "c"], ["x", "y", "z"]
    for _ in range(50):
        child = replace(genotype, pool, rng)
        changed = [i for i in range(3) if child[i] != genotype[i]]
        assert len(changed) == 1 and child[changed[0]] in pool
    assert genotype == ["a", "b", "c"]


def test_near_weights_fall_with_grid_distance():
    bins = np.array([[0], [1], [2], [5]], dtype=float)
    w = near_weights(bins, parent=0)
    assert w[0] == 1.0 and w[0] > w[1] > w[2] > w[3]
    assert w[1] == 0.5  # 1 / (1 + 1^3)


def elites_frame(n_far=1):
    rows = [{"text": "p", "bin_s": 0}, {"text": "n1", "bin_s": 1}, {"text": "n2", "bin_s": 1}]
    rows += [{"text": f"far{i}", "bin_s": 19} for i in range(n_far)]
    return pd.DataFrame(rows)


def test_near_draws_mostly_from_the_parents_neighbourhood():
    rng = np.random.default_rng(0)
    drawn = [t for _ in range(300) for t in near(elites_frame(), ["s"], 3, rng)]
    assert set(drawn) <= {"p", "n1", "n2", "far0"}
    assert drawn.count("far0") < 0.4 * len(drawn)


def test_mutate_uses_near_only_with_enough_elites():
    rng = np.random.default_rng(0)
    kinds = {mutate(["a", "b", "c"], ["x"], elites_frame().head(2), ["s"], 1.0, rng)[0] for _ in range(20)}
    assert kinds == {"replace"}
    kinds = {mutate(["a", "b", "c"], ["x"], elites_frame(), ["s"], 1.0, rng)[0] for _ in range(20)}
    assert kinds == {"near"}


def test_few_shot_prompt_ends_on_an_open_template_line():
    prompt = few_shot_prompt("System.", "Here is one:", ["A.", "B."], "\n###\n")
    assert prompt == "System.\n\nHere is one:\nA.\n###\nHere is one:\nB.\n###\nHere is one:\n"


def test_sentence_helpers():
    assert cut_at_separator("First item.\n###\nHere is one:\nnext", "\n###\n") == "First item."
    assert ends_sentence("Done.") and ends_sentence('He said "yes!"') and not ends_sentence("And then")
    assert trim_to_last_sentence("One. Two! Three and") == "One. Two!"
    assert trim_to_last_sentence("no end at all") == "no end at all"
