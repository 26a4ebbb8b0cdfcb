"""Prompt text: the LMX few-shot generator prompt, the aggregate-and-refine prompt (Mixture-of-Agents: `ask`'s later
layers and the `refine` search) and the helpers that keep candidates to whole sentences."""

import re

_SENTENCE_END = re.compile(r"""[.!?]["')\]]*(?=\s|$)""")
_FINAL_SENTENCE_END = re.compile(r"""[.!?]["')\]]*$""")
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+")


def few_shot_prompt(system_prompt: str, template: str, items: list[str], separator: str) -> str:
    """`system_prompt`, then `template\\nitem` per few-shot item joined by `separator`, ending on an open template
    line for the model to complete (completion style, as in LMX; no chat template)."""
    shots = "".join(f"{template}\n{item}{separator}" for item in items)
    return f"{system_prompt}\n\n{shots}{template}\n"


def cut_at_separator(text: str, separator: str) -> str:
    """The model writes the next few-shot item too: keep only the first."""
    marker = separator.strip() or separator
    return text.split(marker, 1)[0].strip()


def ends_sentence(text: str) -> bool:
    """True when the text ends a sentence (a final . ! or ?, maybe followed by closing quotes or brackets)."""
    return bool(_FINAL_SENTENCE_END.search(text.rstrip()))


def sentence_ends(text: str) -> list[int]:
    """The offsets just after each sentence's final mark (and closing quotes or brackets)."""
    return [m.end() for m in _SENTENCE_END.finditer(text)]


def trim_to_last_sentence(text: str) -> str:
    """Drop an unfinished trailing sentence, if at least one sentence is complete."""
    ends = sentence_ends(text)
    return text[: ends[-1]].strip() if ends else text.strip()


def clip_words(text: str, max_chars: int) -> str:
    """The text on one line, cut to at most `max_chars` characters at a word boundary, marked with '...' where cut."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max(0, max_chars - 4)].rsplit(" ", 1)[0]
    return f"{cut} ..."


def aggregate_prompt(references: list[str], max_chars: int, heading: str, instruction: str) -> str:
    """Mixture-of-Agents' aggregate-and-refine prompt: `heading`, the distinct references numbered (each cut to an
    equal share of `max_chars`, so the prompt stays bounded however many there are), then `instruction` last (a
    small model follows what it read last). Empty string without references (the caller asks plainly)."""
    distinct = list(dict.fromkeys(" ".join(t.split()) for t in references if t.strip()))
    if not distinct:
        return ""
    share = max_chars // len(distinct)
    shown = "\n".join(f"{i}. {clip_words(t, share)}" for i, t in enumerate(distinct, 1))
    return f"{heading}\n{shown}\n\n{instruction}"


def without_list_marker(text: str) -> str:
    """The text without a leading '1.' / '2)' / '-' that a model copied from a numbered list of references (left
    on, the marker reads as a finished sentence, and a cut-off text would be trimmed down to '1.')."""
    return _LIST_MARKER.sub("", text, count=1)
