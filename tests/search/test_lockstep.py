"""Searches in lockstep: many searches' model calls merged into one batched call per round, with the same texts
as each search run alone (on a deterministic toy backend), and a failing search neither hangs nor hides."""

import zlib

import numpy as np
import pytest

from evoforge.core.config import TreeConfig
from evoforge.search.lockstep import run_in_lockstep
from evoforge.search.tree_writing import search_prompt
from models.backend import Generation, SamplingSettings


class ToyBackend:
    """Deterministic per row (a row's output depends on its prompt only, never on its batch): the next 'sentence'
    is a word picked by a hash of the prompt; log-probabilities are a hash of (prompt, option). Counts its calls."""

    name, device, has_chat_template = "toy", "cpu", False

    def __init__(self, fail_on: str | None = None):
        self.calls: list[tuple[str, int]] = []
        self.fail_on = fail_on

    def chat_prompt(self, user, system=None):
        return f"{system or ''}|{user}|"

    def generate(self, prompts, settings, stop=None, seed=None, desc="generate"):
        self.calls.append(("generate", len(prompts)))
        if self.fail_on and any(self.fail_on in p for p in prompts):
            raise RuntimeError("toy backend: injected failure")
        out = []
        for p, s in zip(prompts, settings):
            h = zlib.crc32(p.encode())
            words = min(s.max_new_tokens, 1 + h % 3)
            ending = "." if stop and "." in stop else " end."
            out.append(Generation(" " + " ".join(f"w{(h >> k) % 7}" for k in range(words)) + ending, words + 1))
        return out

    def option_logprobs(self, prompts, options, score_batch_size=None, desc="score", reuse_prefix=True):
        self.calls.append(("option_logprobs", len(prompts)))
        return np.array([[-(zlib.crc32((p + o).encode()) % 1000) / 100 for o in options] for p in prompts])


def toy_values(backend):
    """A value function that asks the backend (as the judges' panel does): one option_logprobs call per batch."""
    return lambda texts: np.exp(backend.option_logprobs([f"judge: {t}" for t in texts], [" yes", " no"])[:, 0])


TREE = TreeConfig(width=2, k=2, iterations=3, sentence_tokens=4, max_steps=3)
SETTINGS = SamplingSettings(max_new_tokens=12)


def one_search(strategy: str, prompt: str, seed: int):
    def run(backends):
        toy = backends["toy"]
        return search_prompt(strategy, toy, prompt, SETTINGS, TREE, toy_values(toy), seed)
    return run


@pytest.mark.parametrize("strategy", ["beam", "tot", "mcts"])
def test_searches_in_lockstep_write_what_each_writes_alone_in_fewer_calls(strategy):
    prompts = [f"question {i}?" for i in range(5)]
    alone, alone_calls = [], 0
    for i, p in enumerate(prompts):
        toy = ToyBackend()
        result, tokens = one_search(strategy, p, i)({"toy": toy})
        alone.append((result.text, result.score, tokens))
        alone_calls += len(toy.calls)
    toy = ToyBackend()
    results, lockstep = run_in_lockstep({"toy": toy}, [one_search(strategy, p, i) for i, p in enumerate(prompts)])
    assert [(r.text, r.score, t) for r, t in results] == alone
    assert lockstep.requested_calls == alone_calls and lockstep.batched_calls == len(toy.calls)
    if strategy != "beam":  # beam's log-probability options are each search's own texts: not mergeable
        assert len(toy.calls) <= alone_calls / 3  # five searches, merged: about one search's calls
        assert max(rows for _, rows in toy.calls) > 5  # a merged call carries several searches' rows


def test_a_merged_generate_is_cut_into_bounded_batches():
    toy = ToyBackend()
    results, lockstep = run_in_lockstep({"toy": toy}, [one_search("tot", f"question {i}?", i) for i in range(5)],
                                        batch_rows=4)
    generated = [rows for kind, rows in toy.calls if kind == "generate"]
    assert max(generated) <= 4 and sum(generated) >= 10  # 5 searches x k=2 rows, in calls of at most 4 rows
    assert len(results) == 5 and lockstep.batched_calls < lockstep.requested_calls


def test_a_failing_batch_raises_and_nothing_hangs():
    toy = ToyBackend(fail_on="question 2?")
    with pytest.raises(RuntimeError, match="injected failure"):
        run_in_lockstep({"toy": toy}, [one_search("tot", f"question {i}?", i) for i in range(2, 4)])
