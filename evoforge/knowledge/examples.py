"""Few-shot examples from a knowledge base for evolution: the passages nearest each niche of a domain's grid.

They join the run's seed pool, which LMX draws its few-shot items from (and `target` tops its examples up
from), so a person's own documents seed a domain: a niche's query is the domain's description and the niche in
words ("... One whose sentiment is very negative."), and its nearest passages, cut to the length of a pool item,
become examples.
"""

import itertools

from evoforge.core.domain import Domain
from evoforge.core.niches import niche_wish
from evoforge.knowledge.base import KnowledgeBase

EXAMPLE_WORDS = 80  # a seed pool item is a short text; a 120-word chunk would crowd the few-shot prompt


def niche_query(domain: Domain, bins: list[int]) -> str:
    return f"{domain.description} One whose {niche_wish(domain, bins)}.".strip()


def niche_examples(kb: KnowledgeBase, domain: Domain, per_niche: int = 1, **filters) -> list[str]:
    """Up to `per_niche` passages per niche (each passage once, cut to EXAMPLE_WORDS words), niches in grid order."""
    seen, examples = set(), []
    for bins in itertools.product(*(range(axis.num_bins) for axis in domain.axes)):
        for passage in kb.search(niche_query(domain, list(bins)), per_niche, **filters):
            if passage.chunk_hash not in seen:
                seen.add(passage.chunk_hash)
                examples.append(" ".join(passage.text.split()[:EXAMPLE_WORDS]))
    return examples
