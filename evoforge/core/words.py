"""Words of a text, for comparing texts by what they say: answers in consensus (evoforge.judges.selection), a
query and the sentences of retrieved passages (evoforge.knowledge.summarize)."""

import re

# Words that carry no answer: left out of an answer's short form, so "The answer is Paris." and "Paris." agree.
STOPWORDS = frozenset(
    "a an the is are was were be been being am it its this that these those there here of in on at to for from by "
    "with as and or but so if then than too very just also not no yes do does did has have had i you he she we they "
    "my your our their his her me him us them what which who whom whose when where why how answer correct "
    "question sure well can could would should will shall may might must one short sentence".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-case words and numbers ("1,000" and "3.5" stay whole), punctuation dropped."""
    return [w.rstrip(".,") for w in _WORD.findall(text.lower())]
