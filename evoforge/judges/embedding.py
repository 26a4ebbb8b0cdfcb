"""Embedding judges: a measure read from where a text's sentence embedding lies between an axis's two poles.

A small generative judge can be blind to an axis: SmolLM2-135M answers "horror" for almost every story, romance or
not (AUC 0.30 on the `stories` references), while MiniLM's embeddings of the same stories separate the two genres
(AUC 1.00 against "... This one is horror." / "... This one is romance."). An embedding judge scores

    P(first pole) = sigmoid(SCALE * (cos(text, pole_1) - cos(text, pole_2)))

It answers measures only: quality is not a matter of which description a text is nearer, so it gives NaN there
and the panel's other judges decide quality. Calibration (Platt on references, anchors on weak references) maps
its scores as it maps any judge's.
"""

import numpy as np

from evoforge.core.domain import Question
from models.embedder import load_embedder

# Cosine differences between two pole descriptions are a few hundredths to tenths; this puts them on the
# log-odds scale of a few units that the calibrators and the grid's bins expect.
SCALE = 20.0


def with_poles(question: Question, description: str) -> Question:
    """`question` with its poles filled in from the domain's description where the domain file gives none."""
    if question.poles is not None:
        return question
    lead = f"{description.strip()} " if description.strip() else ""
    return question.model_copy(update={"poles": tuple(f"{lead}This one is {label}." for label in question.labels)})


def pole_scores(embedder_name: str, question: "Question | list[Question]", texts: list[str]) -> np.ndarray:
    """P(first pole) per text; NaN for a question without poles (quality). One question per text is allowed when
    all share the same poles."""
    per_text = question if isinstance(question, list) else [question] * len(texts)
    poles = {q.poles for q in per_text}
    if not texts or poles == {None}:
        return np.full(len(texts), np.nan)
    if len(poles) > 1:
        raise ValueError("an embedding judge scores one axis per call: every text's question must share its poles")
    embedder = load_embedder(embedder_name)
    first, second = embedder.embed(list(poles.pop()))
    vectors = embedder.embed(texts)
    return 1.0 / (1.0 + np.exp(-SCALE * (vectors @ first - vectors @ second)))
