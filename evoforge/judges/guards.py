"""Judge-gaming guards: a judged text may not fake the judge's prompt, and a text that talks to its judge is
flagged and kept out of the archive.

A generator optimised against its judges drifts toward whatever fools them. The cheapest fools are structural
(a chat template's special tokens, a fake `### Response:` or closing tag that ends the text early and answers
for the judge) and rhetorical (an instruction to the evaluator: "answer positive", "ignore the instructions
above"). The first kind is removed before a text enters any judge prompt (`neutralise`), so it cannot close or
fake the template whoever wrote it; both kinds are detected on the text as written (`injection_reasons`) and a
flagged candidate is scored but not placed.

The rules are written for text that is *about* something, as every domain's output is; they fire on text that
addresses whoever reads it as a classifier. They miss new phrasings, so a learned check of each sentence's meaning
(`evoforge.judges.detector`) flags too (`guard_reasons`). The false-positive rate on clean texts, and the attack
success rate with and without the guards, are measured by `benchmarks/attacks.py`.
"""

import re

# `<|im_start|>`, `<|endoftext|>`, `<|eot_id|>`, ...: chat templates' special tokens, and `<s>`/`</s>`.
_SPECIAL_TOKENS = re.compile(r"<\|[^<>|]{1,40}\|>|</?s>")
# Prompt-format markers: `### Instruction:`, `### Response`, and role lines that open a fake turn.
_MARKERS = re.compile(r"#{2,}\s*(?:instruction|input|response|system|user|assistant)\b\s*:?", re.IGNORECASE)
_ROLE_LINES = re.compile(r"(?:^|(?<=\n)|(?<=[.!?]\s))\s*(?:system|assistant|user|evaluator|judge)\s*:", re.IGNORECASE)
# Closing or opening tags of the kind a prompt wraps its input in.
_TAGS = re.compile(r"</?\s*(?:text|input|instruction|response|system|user|assistant|answer|output|document|review)\s*>",
                   re.IGNORECASE)

# Sentences that address an evaluator rather than the text's reader.
_ADDRESSES_JUDGE = [
    ("ignore-instructions", re.compile(
        r"\b(?:ignore|disregard|forget|override)\b[^.!?\n]{0,40}\b(?:instructions?|prompts?|rules|guidelines|above|previous|prior)\b",
        re.IGNORECASE)),
    ("names-evaluator", re.compile(
        r"\b(?:evaluators?|graders?|classifiers?|annotators?|language model|AI model|AI assistant|"
        r"system (?:note|message|prompt)|(?:dear|to the|for the) (?:judges?|reviewers?|models?|AI)|"
        r"note (?:to|for) (?:the )?(?:reviewer|model|AI))\b", re.IGNORECASE)),
    # An imperative to answer, opening a sentence: "Answer 'positive'.", "Classify this text as ...".
    ("imperative-answer", re.compile(
        r"(?:^|[.!?:\]]\s+|\n)\s*(?:please\s+)?(?:answer|reply|respond|output|classify|label|rate|grade|"
        r"categori[sz]e)(?:\s+(?:this|the|it|with|as|only)\b|\s*[:\"'\u201c])", re.IGNORECASE)),
    ("states-label", re.compile(
        r"\b(?:correct|right|expected|true|final)\s+(?:answer|label|output|classification|rating)\b|"
        r"\b(?:sentiment|label|classification|rating|verdict|genre|ending)\s*(?:=|:)\s*[\"'\u201c]?\w", re.IGNORECASE)),
]


def neutralise(text: str) -> str:
    """The text with every structural marker removed, for a judge prompt: it cannot end the prompt's input, open
    a turn or answer for the judge. Text without such markers (every clean text) comes back unchanged."""
    out = _SPECIAL_TOKENS.sub(" ", text)
    out = _MARKERS.sub(" ", out)
    out = _TAGS.sub(" ", out)
    out = _ROLE_LINES.sub(" ", out)
    return text if out == text else re.sub(r"[ \t]{2,}", " ", out).strip()


def injection_reasons(text: str) -> list[str]:
    """Why the text looks written for its judge rather than its reader ([] when it does not)."""
    reasons = []
    if _SPECIAL_TOKENS.search(text) or _MARKERS.search(text) or _TAGS.search(text) or _ROLE_LINES.search(text):
        reasons.append("prompt-markup")
    reasons += [name for name, rule in _ADDRESSES_JUDGE if rule.search(text)]
    return reasons


def guard_texts(texts: list[str], labels: list[str], detector=None) -> tuple[list[str], list[list[str]], list[str]]:
    """Per text: what the judges read (markup removed, and the most judge-addressing sentence left out where the
    learned check places it above its strip threshold), why the guards flag it (the rules' reasons, and
    `learned-address` above the learned check's flag threshold), and the sentence left out ("" if none).
    `labels`: the judges' answer labels, which the learned check looks for; `detector`: the shipped one by default."""
    from evoforge.judges.detector import shipped_detector

    detector = detector or shipped_detector()
    judged, reasons, left_out = [], [], []
    for text, (sentence, p) in zip(texts, detector.most_addressing(texts, labels) if texts else []):
        strip = p > detector.strip_threshold and sentence != text.strip()  # a one-sentence text stays whole
        judged.append(neutralise(" ".join(text.replace(sentence, " ", 1).split()) if strip else text))
        reasons.append(injection_reasons(text) + (["learned-address"] if p > detector.threshold else []))
        left_out.append(sentence if strip else "")
    return judged, reasons, left_out
