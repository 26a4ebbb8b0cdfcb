"""Prompt text: the LMX few-shot generator prompt and the helpers that keep candidates to whole sentences."""

import re

_SENTENCE_END = re.compile(r"""[.!?]["')\]]*(?=\s|$)""")
_FINAL_SENTENCE_END = re.compile(r"""[.!?]["')\]]*$""")


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
