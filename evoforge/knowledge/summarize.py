"""Condense retrieved passages to a character budget: extractive, the sentences most similar to the query.

Extractive rather than written by the generator: the 135M model paraphrases facts wrongly (a figure or a name
changes), takes seconds per passage on a CPU core, and its summary could not be checked against the passages;
the sentences themselves keep every fact exact and citable, and MiniLM ranks them in milliseconds. A sentence's score
is its cosine similarity to the query plus LEXICAL_WEIGHT x the share of the query's content words it contains:
MiniLM alone overlooks the word that matters in a factual question ("Which tea is picked in April?" ranked
"Blue Ember is picked by hand in April" third of five). Chosen sentences keep their passage's order and carry its
number, `[n]`, as the Sources list cites it.
"""

import re

import numpy as np

from evoforge.core.words import STOPWORDS, words
from evoforge.knowledge.base import KnowledgeBase, Passage
from evoforge.knowledge.cache import LRUCache

LEXICAL_WEIGHT = 0.5
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def word_overlap(query: str, texts: list[str]) -> np.ndarray:
    """Per text, the share of the query's content words (stopwords left out) that it contains."""
    wanted = set(words(query)) - STOPWORDS
    if not wanted:
        return np.zeros(len(texts))
    return np.array([len(wanted & set(words(t))) / len(wanted) for t in texts])


def condense(kb: KnowledgeBase, query: str, passages: list[Passage], budget_chars: int = 800) -> str:
    """The passages' sentences most similar to the query, best first until `budget_chars` is reached, printed in
    passage order as `[n] sentence sentence`. Cached in the base's LRU cache (query, passages, budget)."""
    if not passages:
        return ""
    key = LRUCache.key("summary", query, str(budget_chars), *(p.chunk_hash for p in passages))
    cached = kb.cache.text(key)
    if cached is not None:
        return cached
    candidates = [(n, i, s) for n, p in enumerate(passages, 1) for i, s in enumerate(sentences(p.text))]
    vectors = kb.embed([s for _, _, s in candidates])
    texts = [s for _, _, s in candidates]
    relevance = vectors @ kb.query_vector(query) + LEXICAL_WEIGHT * word_overlap(query, texts)
    chosen, used = [], 0
    for j in np.argsort(-relevance, kind="stable"):
        sentence = candidates[j][2]
        if any(sentence in candidates[c][2] or candidates[c][2] in sentence for c in chosen):
            continue  # overlapping chunks repeat sentences (or cut one short): say each once
        if used + len(sentence) + 1 > budget_chars:
            if not chosen:  # the best sentence alone is over the budget: keep its head
                chosen.append(j)
                candidates[j] = (*candidates[j][:2], sentence[: max(budget_chars - 4, 1)].rstrip() + "...")
            continue
        chosen.append(j)
        used += len(sentence) + 1
    lines = []
    for n in sorted({candidates[j][0] for j in chosen}):
        picked = sorted((candidates[j][1], candidates[j][2]) for j in chosen if candidates[j][0] == n)
        lines.append(f"[{n}] " + " ".join(s for _, s in picked))
    summary = "\n".join(lines)
    kb.cache.put_text(key, summary)
    return summary
