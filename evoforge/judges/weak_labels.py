"""Weak reference labels for a domain shipped without any (`weak_references` in the run config).

A small judge's raw probabilities stay in the middle of [0, 1] (0.34-0.78 on `jaws`), while the published grids put
most of their bins near 0 and 1, so an uncalibrated run can reach only a few middle cells. A fitted calibration
spreads them, and needs labelled texts. Without references, the generator writes them: for each axis, texts asked
for at each pole ("... Write one whose sentiment is very positive."), labelled with the pole they were asked for.
The labels are noisy (a 135M model does not always write what it is asked for), so the run calibrates on them by
`anchors` (`evoforge.judges.calibration`), which needs only that the judge's median scores of the two sets are in
order; Platt scaling on noisy labels squeezes the scores instead. The fit's own report (accuracy, AUC on these
texts) says how well the judges separate them.
"""

import numpy as np
import pandas as pd

from evoforge.core.domain import Axis, Domain
from evoforge.core.niches import axis_phrase
from models.backend import Backend, SamplingSettings

POLES = ((1, 1.0), (0, 0.0))  # (label, P(first label)): the first label's pole, then the second's


def pole_prompt(domain: Domain, axis: Axis, value: float) -> str:
    """The instruction for one pole of one axis: '<description> Write one whose sentiment is very positive.'"""
    return f"{domain.description} Write one whose {axis.name} is {axis_phrase(axis, value)}. Reply with the text only."


def pole_references(backend: Backend, domain: Domain, per_pole: int, max_new_tokens: int, seed: int = 0) -> pd.DataFrame:
    """`per_pole` texts for each pole of each axis, in the references' shape: `text`, `quality` (unknown) and one
    column per axis (1 or 0 for the axis the text was written for, unknown for the others). Empty texts are
    dropped."""
    prompts, labels = [], []
    for axis in domain.axes:
        for label, value in POLES:
            prompts += [backend.chat_prompt(pole_prompt(domain, axis, value))] * per_pole
            labels += [(axis.name, label)] * per_pole
    settings = [SamplingSettings(temperature=0.9, top_p=0.95, max_new_tokens=max_new_tokens)] * len(prompts)
    texts = [g.text.strip() for g in backend.generate(prompts, settings, seed=seed, desc="weak references")]
    rows = []
    for text, (name, label) in zip(texts, labels):
        if text:
            rows.append({"text": text, "quality": np.nan, **{a.name: np.nan for a in domain.axes}, name: float(label)})
    return pd.DataFrame(rows, columns=["text", "quality", *domain.axis_names])
