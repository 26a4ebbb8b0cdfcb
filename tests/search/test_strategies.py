"""Beam search, Tree-of-Thought and MCTS: the tree logic on a toy domain (texts of digit 'sentences', a known
best answer), then one end-to-end call of each on the embedded model (slow)."""

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest

from evoforge.search.strategies import (
    SentenceExpander,
    Step,
    TreeNode,
    backup,
    beam,
    beam_score,
    Node,
    mcts,
    select,
    tot,
    uct,
)

DEPTH, DIGITS = 3, 3
STEP_LOGPROB = {0: -1.0, 1: -0.2, 2: -3.0}  # per digit 'sentence'
STEP_TOKENS = {0: 1, 1: 2, 2: 4}


def digits(text: str) -> list[int]:
    return [int(d) for d in re.findall(r"\d", text)]


def toy_value(texts: list[str]) -> np.ndarray:
    """Sum of the digits, +10 for texts that start '0 2', over 14 (values in [0, 1], as the judges' qualities): a
    deceptive tree (after one step, '2' looks best and '0' worst; the best whole text is '0 2 2', worth 1)."""
    return np.array([sum(d) + (10 if d[:2] == [0, 2] else 0) for d in map(digits, texts)], dtype=float) / 14


class ToyExpander:
    """Deterministic: the k continuations of a text are the digits 0..k-1; a text ends at DEPTH digits; rollouts
    append 1s. Records what it was asked, to check the batching."""

    def __init__(self):
        self.expanded: list[list[str]] = []
        self.completed: list[list[str]] = []

    def expand(self, texts, k, logprobs=False):
        self.expanded.append(list(texts))
        out = []
        for text in texts:
            depth, lp = len(digits(text)), self.logprob(text)
            out.append([Step(f" {d}.", lp + STEP_LOGPROB[d] if logprobs else math.nan, STEP_TOKENS[d],
                             depth + 1 >= DEPTH) for d in range(k)])
        return out

    def complete(self, texts):
        self.completed.append(list(texts))
        return [t + " 1." * (DEPTH - len(digits(t))) for t in texts]

    @staticmethod
    def logprob(text):
        return sum(STEP_LOGPROB[d] for d in digits(text))


def all_texts(k=DIGITS):
    return ["".join(f" {d}." for d in path) for path in itertools.product(range(k), repeat=DEPTH)]


def normalised(text):
    return ToyExpander.logprob(text) / sum(STEP_TOKENS[d] for d in digits(text))


# --- UCT and MCTS -----------------------------------------------------------------------------------------------


def test_uct_formula_and_unvisited_first():
    child = TreeNode(visits=2, total=1.0)
    assert uct(child, 10, 1.414) == pytest.approx(0.5 + 1.414 * math.sqrt(math.log(10) / 2))
    assert uct(TreeNode(), 10, 1.414) == math.inf
    root = TreeNode(visits=12)
    good = TreeNode(visits=10, total=8.0, parent=root)  # mean 0.8, visited a lot
    rare = TreeNode(visits=2, total=0.6, parent=root)  # mean 0.3, visited little
    root.children = [good, rare]
    assert select(root, exploration=0.0) is good  # exploitation only
    assert select(root, exploration=1.414) is rare  # 0.3 + 1.414*sqrt(ln 12 / 2) > 0.8 + 1.414*sqrt(ln 12 / 10)
    root.children.append(fresh := TreeNode(parent=root))
    assert select(root, exploration=0.0) is fresh


def test_backup_adds_the_value_to_every_ancestor():
    root = TreeNode()
    child = TreeNode(parent=root)
    leaf = TreeNode(parent=child)
    backup(leaf, 2.0)
    backup(child, 1.0)
    assert (root.visits, root.total, child.visits, child.total, leaf.visits) == (2, 3.0, 2, 3.0, 1)


def test_mcts_finds_the_deceptive_best_text_with_batched_calls():
    toy = ToyExpander()
    result = mcts(toy, toy_value, iterations=12, k=DIGITS)
    assert digits(result.text) == [0, 2, 2] and result.score == 1
    assert all(len(batch) == 1 for batch in toy.expanded)  # one leaf per iteration, its k children in one call
    assert result.value_calls <= 12 and result.expand_calls <= 24
    greedy = mcts(ToyExpander(), toy_value, iterations=2, k=DIGITS)  # too few iterations to look past step one
    assert greedy.score < 1


# --- beam ---------------------------------------------------------------------------------------------------------


def test_wide_beam_is_exact_and_narrow_beam_is_greedy():
    exact = beam(ToyExpander(), width=DIGITS**DEPTH, per_beam=DIGITS, max_steps=DEPTH)
    best = max(all_texts(), key=normalised)
    assert exact.text == best and exact.score == pytest.approx(normalised(best))
    toy = ToyExpander()
    greedy = beam(toy, width=1, per_beam=DIGITS, max_steps=DEPTH)
    # Width 1 follows the best normalised prefix: 1 (-0.2/2), then 1 1, then 1 1 1.
    assert digits(greedy.text) == [1, 1, 1]
    assert [len(batch) for batch in toy.expanded] == [1, 1, 1]  # one call per step, live beams only
    summed = beam(ToyExpander(), width=DIGITS**DEPTH, per_beam=DIGITS, max_steps=DEPTH, normalise=False)
    assert summed.text == max(all_texts(), key=ToyExpander.logprob)


def test_beam_keeps_finished_beams_and_expands_only_live_ones():
    toy = ToyExpander()
    result = beam(toy, width=2, per_beam=2, max_steps=10)
    assert [len(b) for b in toy.expanded] == [1, 2, 2]  # width 2 after the first step; done after DEPTH steps
    assert result.expand_calls == 3
    assert all(len(digits(t)) == DEPTH for t, _ in result.candidates)
    assert beam_score(Node("", -2.0, 4)) == -0.5 and beam_score(Node("", -2.0, 4), normalise=False) == -2.0
    with pytest.raises(ValueError, match="width"):
        beam(toy, width=0)


# --- Tree-of-Thought ----------------------------------------------------------------------------------------------


def test_tot_keep_decides_whether_it_sees_past_the_deceptive_step():
    toy = ToyExpander()
    wide = tot(toy, toy_value, k=DIGITS, keep=DIGITS, max_steps=DEPTH)
    assert digits(wide.text) == [0, 2, 2] and wide.score == 1
    assert [len(b) for b in toy.expanded] == [1, 3, 3] and wide.value_calls == 3  # one of each per step
    assert wide.valued_texts == 3 + 9 + 9
    narrow = tot(ToyExpander(), toy_value, k=DIGITS, keep=1, max_steps=DEPTH)
    assert digits(narrow.text) == [2, 2, 2] and narrow.score == pytest.approx(6 / 14)


# --- the embedded model ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expander(exact_backend):
    from evoforge.core.domain import load_domain
    from evoforge.core.prompts import few_shot_prompt

    opinions = load_domain("opinions")
    g = opinions.generator
    prompt = few_shot_prompt(g.system_prompts[0], g.template, opinions.load_pool()[:2], g.separator)
    return SentenceExpander(exact_backend, prompt, separator=g.separator, sentence_tokens=16, max_tokens=32, seed=1)


@pytest.fixture(scope="module")
def value_fn(embedder):
    from evoforge.steps.screening import EmbeddingMemo, training_set
    from evoforge.core.store import RunStore
    from models.value_model import Context, ValueModel, features

    memo = EmbeddingMemo(embedder)
    data = training_set(RunStore(Path(__file__).resolve().parents[1] / "data" / "opinions-s0-run"), 8,
                        ["sentiment"], memo)
    model = ValueModel().fit(data.x, data.targets, data.inserted)
    return lambda texts: model.predict(features(texts, memo(texts), Context()))["quality"]


@pytest.mark.slow
def test_each_strategy_writes_a_text_on_the_embedded_model(expander, value_fn):
    results = {
        "beam": beam(expander, width=2, per_beam=2, max_steps=2),
        "tot": tot(expander, value_fn, k=2, keep=2, max_steps=2),
        "mcts": mcts(expander, value_fn, iterations=2, k=2),
    }
    for name, result in results.items():
        print(name, round(result.score, 3), repr(result.text))
        assert len(result.text.split()) >= 3, name
        assert np.isfinite(result.score), name
    assert results["beam"].score < 0  # a mean token log-probability
    assert results["beam"].expand_calls <= 2 and results["tot"].expand_calls <= 2 and results["tot"].value_calls <= 2
