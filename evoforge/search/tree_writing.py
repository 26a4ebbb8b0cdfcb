"""Writing a generation's candidates with a search strategy (`RunConfig.strategy`, or the manager's pick per
candidate): 'sample' rows go through `write_candidates` as today; 'beam', 'tot' and 'mcts' rows each run their
strategy (evoforge.search.strategies) from the candidate's prompt, one candidate after another (each strategy
batches its own nodes: one model call per expansion step).

A tree-searched candidate's `new_tokens` counts every token its search generated (expansions and rollouts), not
only those of the text it kept: that is what it cost, and what the run's token budget and metrics add up.
"""

import numpy as np
import pandas as pd

from evoforge.core.domain import Domain
from evoforge.core.prompts import trim_to_last_sentence
from evoforge.search.generation import MIN_TEXT_CHARS, Plan, join_opening, write_candidates
from evoforge.search.strategies import SearchResult, SentenceExpander, Values, beam, mcts, tot

NEEDS_VALUES = ("tot", "mcts")  # strategies that value partial texts (beam ranks by the model's log-probability)


class TokenCount:
    """The backend with a count of the new tokens its `generate` calls wrote (a strategy's whole cost) and of its
    model calls (`generate` and `option_logprobs`, each batched call once)."""

    def __init__(self, backend):
        self.backend, self.tokens, self.calls = backend, 0, 0

    def generate(self, *args, **kwargs):
        outs = self.backend.generate(*args, **kwargs)
        self.tokens += sum(o.new_tokens for o in outs)
        self.calls += 1
        return outs

    def option_logprobs(self, *args, **kwargs):
        self.calls += 1
        return self.backend.option_logprobs(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.backend, name)


def search_one(strategy: str, expander: SentenceExpander, tree, values: Values | None) -> SearchResult:
    """One text by `strategy` with the settings of `tree` (evoforge.core.config.TreeConfig)."""
    if strategy in NEEDS_VALUES and values is None:
        raise ValueError(f"strategy: '{strategy}' values partial texts and needs a value model; pass values, or "
                         "use 'sample' or 'beam'")
    if strategy == "beam":
        return beam(expander, width=tree.width, per_beam=tree.k, max_steps=tree.max_steps, normalise=tree.normalise)
    if strategy == "tot":
        return tot(expander, values, k=tree.k, keep=tree.width, max_steps=tree.max_steps)
    if strategy == "mcts":
        return mcts(expander, values, iterations=tree.iterations, k=tree.k, exploration=tree.exploration)
    raise ValueError(f"strategy: expected one of sample, beam, tot, mcts, got {strategy!r}")


def search_prompt(strategy: str, backend, prompt: str, settings, tree, values: Values | None, seed: int,
                  separator: str | None = None) -> tuple[SearchResult, int]:
    """One text written from `prompt` by `strategy` with the expert's sampling `settings` (its max-new-tokens
    bounds the text): the search's result and every new token it generated."""
    counted = TokenCount(backend)
    expander = SentenceExpander(counted, prompt, settings, separator, seed=seed,
                                sentence_tokens=min(tree.sentence_tokens, settings.max_new_tokens),
                                max_tokens=settings.max_new_tokens)
    return search_one(strategy, expander, tree, values), counted.tokens


def write_with_strategies(backends: dict, plans: list[Plan], strategies: list[str], domain: Domain,
                          continue_tokens: int, seed: int, tree, values: Values | None = None) -> pd.DataFrame:
    """`write_candidates` where each plan has its strategy. Returns its columns plus `strategy`,
    `strategy_score` (the search's own score of the kept text: mean log-probability per token for beam, the value
    for tot and mcts; NaN for a sample) and `model_calls` (batched model calls the search made; 1 for a sample,
    not counting its continuation), in plan order."""
    if len(strategies) != len(plans):
        raise ValueError(f"strategies: expected one per plan ({len(plans)}), got {len(strategies)}")
    sampled = [i for i, s in enumerate(strategies) if s == "sample"]
    searched = [i for i, s in enumerate(strategies) if s != "sample"]
    frames = []
    if sampled:
        frames.append(write_candidates(backends, [plans[i] for i in sampled], domain, continue_tokens, seed)
                      .assign(strategy="sample", strategy_score=np.nan, model_calls=1, _row=sampled))
    rows = []
    for i in searched:
        plan = plans[i]
        backend = backends[plan.expert.backend]
        prompt = backend.chat_prompt(plan.prompt) if plan.chat else plan.prompt
        result, tokens = search_prompt(strategies[i], backend, prompt, plan.expert.sampling, tree, values,
                                       seed + i, domain.generator.separator)
        text = trim_to_last_sentence(join_opening(plan.opening, result.text.strip()))
        rows.append({
            "expert_id": plan.expert.expert_id, "backend": plan.expert.backend, "mutation": plan.mutation,
            "genotype": plan.genotype, "system_prompt": plan.expert.system_prompt, "text": text,
            "new_tokens": tokens, "continued": False, "valid": len(text) >= MIN_TEXT_CHARS,
            "strategy": strategies[i], "strategy_score": result.score, "model_calls": result.expand_calls, "_row": i,
        })
    if rows:
        frames.append(pd.DataFrame(rows))
    out = pd.concat(frames, ignore_index=True).sort_values("_row", ignore_index=True).drop(columns="_row")
    return out.astype({"new_tokens": "int64", "continued": bool, "valid": bool, "model_calls": "int64",
                       "strategy_score": float})

