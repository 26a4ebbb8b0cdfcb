"""Search over partial texts: beam search, Tree-of-Thought and MCTS, each over sentence-level continuations.

A node is a partial text; expanding it writes its next sentence. The strategies see the model only through an
`Expander` (`SentenceExpander` is the one over the `Backend` protocol: sampled sentences from `generate`, their
log-probabilities from `option_logprobs`) and a value function (texts -> values: the learned value model, or the
judges), so the tree logic runs as well on a toy domain as on the embedded model. Every expansion step makes one
`expand` call for all the nodes it expands (one batched `generate`, plus one batched `option_logprobs` where the
strategy needs log-probabilities), and one value call for all the texts it values: never one call per node.

- `beam`: keep the `width` best texts by length-normalised (or summed) log-probability; each step every live beam
  draws `per_beam` next sentences. The model's API samples whole continuations, so this is beam search over sampled
  sentences (a stochastic beam), not over tokens.
- `tot`: Tree-of-Thought; each step expands every kept node into `k` next sentences, values all of them and keeps
  the best `keep`, until every kept text has ended.
- `mcts`: UCT (mean value + c * sqrt(ln N(parent) / N(child)), c = 1.414 as in seed 002); each iteration selects a
  leaf, expands it into `k` next sentences, completes each with one sampled rollout and values the rollouts, and
  backs the values up. It returns the best-valued complete text it saw (each rollout is one).
"""

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np

from evoforge.core.prompts import cut_at_separator
from models.backend import Backend, SamplingSettings

Values = Callable[[list[str]], np.ndarray]  # texts -> one value each (higher is better)


@dataclass(frozen=True)
class Step:
    """One continuation of a partial text: the words it adds, the text's log-probability after it (summed over
    all its tokens; NaN where not asked for), its new tokens, and whether the text ended with it."""

    piece: str
    logprob: float
    tokens: int
    done: bool


class Expander(Protocol):
    def expand(self, texts: list[str], k: int, logprobs: bool = False) -> list[list[Step]]:
        """`k` continuations of every text, in one batched call."""
        ...

    def complete(self, texts: list[str]) -> list[str]:
        """Every text written to its end, in one batched call (rollouts)."""
        ...


@dataclass
class Node:
    text: str = ""
    logprob: float = 0.0
    tokens: int = 0
    done: bool = False

    def child(self, step: Step) -> "Node":
        return Node(self.text + step.piece, step.logprob, self.tokens + step.tokens, step.done)


@dataclass
class SearchResult:
    """The text a strategy returns, its value or score, and what it cost."""

    text: str
    score: float
    expand_calls: int = 0
    value_calls: int = 0
    valued_texts: int = 0
    candidates: list[tuple[str, float]] = field(default_factory=list)  # every finished text and its score


class Counter:
    """Counts the calls a strategy makes (one per batch), so tests and benchmarks can check the batching."""

    def __init__(self, expander: Expander, values: Values | None = None):
        self.expander, self.values = expander, values
        self.expand_calls = self.value_calls = self.valued_texts = 0

    def expand(self, texts, k, logprobs=False):
        self.expand_calls += 1
        return self.expander.expand(texts, k, logprobs)

    def complete(self, texts):
        self.expand_calls += 1
        return self.expander.complete(texts)

    def value(self, texts: list[str]) -> np.ndarray:
        self.value_calls += 1
        self.valued_texts += len(texts)
        return np.asarray(self.values(texts), dtype=float)

    def result(self, text: str, score: float, candidates) -> SearchResult:
        return SearchResult(text, float(score), self.expand_calls, self.value_calls, self.valued_texts, candidates)


# --- beam search ---------------------------------------------------------------------------------------------


def beam_score(node: Node, normalise: bool = True) -> float:
    """A text's log-probability, per token when `normalise` (else summed: favours short texts)."""
    return node.logprob / max(node.tokens, 1) if normalise else node.logprob


def beam(expander: Expander, width: int = 4, per_beam: int = 2, max_steps: int = 6,
         normalise: bool = True) -> SearchResult:
    """Beam search over sentences: each step, every live beam draws `per_beam` next sentences (one batched call for
    all of them); the `width` best texts, finished or not, by `beam_score` stay. Ends when every beam has ended or
    after `max_steps`."""
    if width < 1 or per_beam < 1:
        raise ValueError(f"beam: width and per_beam must be at least 1, got {width} and {per_beam}")
    calls = Counter(expander)
    beams = [Node()]
    for _ in range(max_steps):
        live = [b for b in beams if not b.done]
        if not live:
            break
        steps = calls.expand([b.text for b in live], per_beam, logprobs=True)
        children = [b.child(s) for b, row in zip(live, steps) for s in row]
        pool = [b for b in beams if b.done] + children
        beams = sorted(pool, key=lambda n: beam_score(n, normalise), reverse=True)[:width]
    best = beams[0]
    return calls.result(best.text, beam_score(best, normalise), [(b.text, beam_score(b, normalise)) for b in beams])


# --- Tree-of-Thought -----------------------------------------------------------------------------------------


def tot(expander: Expander, values: Values, k: int = 3, keep: int = 2, max_steps: int = 6) -> SearchResult:
    """Tree-of-Thought: each step expands every kept unfinished node into `k` next sentences (one call), values
    all the new texts (one call) and keeps the best `keep` of the finished and new ones. A text still unfinished
    after `max_steps` counts as it stands."""
    if k < 1 or keep < 1:
        raise ValueError(f"tot: k and keep must be at least 1, got {k} and {keep}")
    calls = Counter(expander, values)
    kept: list[tuple[Node, float]] = [(Node(), -math.inf)]
    for _ in range(max_steps):
        live = [n for n, _ in kept if not n.done]
        if not live:
            break
        steps = calls.expand([n.text for n in live], k)
        children = [n.child(s) for n, row in zip(live, steps) for s in row]
        scored = list(zip(children, calls.value([c.text for c in children])))
        pool = [(n, v) for n, v in kept if n.done] + scored
        kept = sorted(pool, key=lambda nv: nv[1], reverse=True)[:keep]
    best, score = kept[0]
    return calls.result(best.text, score, [(n.text, v) for n, v in kept])


# --- MCTS ------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class TreeNode:
    text: str = ""
    done: bool = False
    parent: "TreeNode | None" = None
    children: list["TreeNode"] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.visits if self.visits else 0.0


def uct(child: TreeNode, parent_visits: int, exploration: float) -> float:
    """UCT: the child's mean value plus `exploration` x sqrt(ln N(parent) / N(child)); an unvisited child first."""
    if child.visits == 0:
        return math.inf
    return child.mean + exploration * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)


def select(root: TreeNode, exploration: float) -> TreeNode:
    """Walk down by UCT (ties: the first child) to a node that has no children yet or has ended."""
    node = root
    while node.children and not node.done:
        node = max(node.children, key=lambda c: uct(c, node.visits, exploration))
    return node


def backup(node: TreeNode, value: float) -> None:
    while node is not None:
        node.visits += 1
        node.total += value
        node = node.parent


def mcts(expander: Expander, values: Values, iterations: int = 8, k: int = 3,
         exploration: float = 1.414) -> SearchResult:
    """UCT over sentences. Each iteration: select a leaf; if it has ended, back its value up again; else expand it
    into `k` next sentences (one call), complete each into a rollout (one call), value the rollouts (one call)
    and back each value up through its child. Returns the best-valued complete text seen."""
    if iterations < 1 or k < 1:
        raise ValueError(f"mcts: iterations and k must be at least 1, got {iterations} and {k}")
    calls = Counter(expander, values)
    root, finished = TreeNode(), {}
    for _ in range(iterations):
        leaf = select(root, exploration)
        if leaf.done:
            backup(leaf, finished[leaf.text])
            continue
        steps = calls.expand([leaf.text], k)[0]
        leaf.children = [TreeNode(leaf.text + s.piece, s.done, leaf) for s in steps]
        open_children = [c for c in leaf.children if not c.done]  # an ended child is its own rollout
        written = dict(zip(map(id, open_children), calls.complete([c.text for c in open_children]))) \
            if open_children else {}
        rollouts = [written.get(id(c), c.text) for c in leaf.children]
        for child, text, value in zip(leaf.children, rollouts, calls.value(rollouts)):
            finished[text] = max(finished.get(text, -math.inf), float(value))
            if child.done:
                finished[child.text] = float(value)
            backup(child, float(value))
    text = max(finished, key=finished.get)
    return calls.result(text, finished[text], sorted(finished.items(), key=lambda kv: -kv[1]))


# --- the model's expander --------------------------------------------------------------------------------------

SENTENCE_STOPS = [".", "!", "?"]


@dataclass
class SentenceExpander:
    """Sentence-level continuations of `prompt` + a partial text from a `Backend`.

    A step samples up to `sentence_tokens` new tokens and stops after a sentence mark; the text has ended when the
    model stopped by itself (end of text), wrote the domain's `separator` (its next few-shot item), or the text
    reached `max_tokens`. Log-probabilities, when asked for, are log P(text so far | prompt), scored for every
    continuation in one `option_logprobs` call."""

    backend: Backend
    prompt: str
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    separator: str | None = None
    sentence_tokens: int = 32
    max_tokens: int = 64
    seed: int = 0
    _calls: int = 0

    def _generate(self, texts: list[str], budgets: list[int]) -> list:
        self._calls += 1  # a new seed per call: the same text expanded twice draws other sentences
        settings = [replace(self.settings, max_new_tokens=max(1, b)) for b in budgets]
        stops = SENTENCE_STOPS + ([self.separator.strip()] if self.separator and self.separator.strip() else [])
        return self.backend.generate([self.prompt + t for t in texts], settings, stop=stops,
                                     seed=self.seed * 1000 + self._calls, desc="expand")

    def _cut(self, piece: str) -> tuple[str, bool]:
        """The piece up to the separator, and whether it was there (the text ended)."""
        if self.separator and (self.separator.strip() or self.separator) in piece:
            return cut_at_separator(piece, self.separator), True
        return piece, False

    def expand(self, texts: list[str], k: int, logprobs: bool = False) -> list[list[Step]]:
        rows = [t for t in texts for _ in range(k)]
        used = self._used(rows)
        outs = self._generate(rows, [min(self.sentence_tokens, self.max_tokens - u) for u in used])
        steps = []
        for text, out, u in zip(rows, outs, used):
            piece, cut = self._cut(out.text)
            stopped_itself = out.new_tokens < min(self.sentence_tokens, self.max_tokens - u) and not any(
                out.text.rstrip().endswith(s) for s in SENTENCE_STOPS)
            done = cut or stopped_itself or not piece.strip() or u + out.new_tokens >= self.max_tokens
            steps.append(Step(piece, math.nan, out.new_tokens, done))
        if logprobs:
            full = [text + s.piece for text, s in zip(rows, steps)]
            lp = self.backend.option_logprobs([self.prompt], full, desc="beam")[0]
            steps = [replace(s, logprob=float(v)) for s, v in zip(steps, lp)]
        return [steps[i * k : (i + 1) * k] for i in range(len(texts))]

    def complete(self, texts: list[str]) -> list[str]:
        used = self._used(texts)
        budgets = [max(1, self.max_tokens - u) for u in used]
        settings = [replace(self.settings, max_new_tokens=b) for b in budgets]
        stop = [self.separator.strip()] if self.separator and self.separator.strip() else None
        self._calls += 1
        outs = self.backend.generate([self.prompt + t for t in texts], settings, stop=stop,
                                     seed=self.seed * 1000 + self._calls, desc="rollout")
        return [t + self._cut(o.text)[0] for t, o in zip(texts, outs)]

    def _used(self, texts: list[str]) -> list[int]:
        """Tokens a partial text already holds, estimated from its words (the protocol has no tokenizer): 4 tokens
        per 3 words, SmolLM2's rate on English prose."""
        return [math.ceil(len(t.split()) * 4 / 3) for t in texts]
