"""AI feedback by answer-token log-probabilities (QDAIF): quality = P(yes), each axis = P(first label).

Each judge asks every question (quality, then each axis) in its own format and phrasing; the probability of the
first label is normalised over the two labels, read from one forward pass per batch of candidates, never from
generated text. The panel's scores are combined by averaging, and each judge's own scores are kept.
"""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from evoforge.config import JudgeConfig
from evoforge.domain import Domain, Question
from evoforge.experts import SamplingSettings

MAX_TEXT_CHARS = 1500  # keeps judge prompts well inside a small model's context


@dataclass(frozen=True)
class QuestionPrompt:
    prompts: list[str]
    options: tuple[str, str]


def question_prompts(backend, judge: JudgeConfig, question: Question, texts: list[str]) -> QuestionPrompt:
    """Prompts asking `question` about each text, in the judge's format, and the two answers as continuations."""
    instruction = question.instructions[judge.phrasing % len(question.instructions)]
    texts = [t[:MAX_TEXT_CHARS] for t in texts]
    if judge.format == "chat" and backend.has_chat_template:
        # The chat template's answer starts right after the assistant header: options carry no leading space.
        prompts = [backend.chat_prompt(f"{instruction}\n\nText: {t}") for t in texts]
        return QuestionPrompt(prompts, tuple(question.labels))
    prompts = [f"### Instruction:\n{instruction}\n\n### Input:{t}\n\n### Response:" for t in texts]
    return QuestionPrompt(prompts, tuple(f" {label}" for label in question.labels))


def first_label_probability(logprobs: np.ndarray) -> np.ndarray:
    """P(first option) normalised over the two options, from log-probabilities of shape (n, 2)."""
    logprobs = np.asarray(logprobs, dtype=float)
    return 1.0 / (1.0 + np.exp(logprobs[:, 1] - logprobs[:, 0]))


def questions(domain: Domain) -> dict[str, Question]:
    """The questions every judge asks: 'quality' first, then each axis by name."""
    return {"quality": domain.quality, **{a.name: a for a in domain.axes}}


def judge_texts(backends: dict, judges: list[JudgeConfig], domain: Domain, texts: list[str]) -> pd.DataFrame:
    """Every judge's score for every question, as columns `judge_<judge>_<question>`, one row per text."""
    scores = {}
    for judge in judges:
        backend = backends[judge.model]
        for qname, question in questions(domain).items():
            qp = question_prompts(backend, judge, question, texts)
            logprobs = backend.option_logprobs(qp.prompts, list(qp.options), desc=f"judge {judge.name}/{qname}")
            scores[f"judge_{judge.name}_{qname}"] = first_label_probability(logprobs)
    return pd.DataFrame(scores, index=range(len(texts)))


def combine_mean(judge_scores: pd.DataFrame, judges: list[JudgeConfig], domain: Domain) -> pd.DataFrame:
    """The panel's score per question: the mean over judges. Columns `quality` and `measure_<axis>`."""
    out = {}
    for qname in questions(domain):
        column = "quality" if qname == "quality" else f"measure_{qname}"
        out[column] = judge_scores[[f"judge_{j.name}_{qname}" for j in judges]].mean(axis=1)
    return pd.DataFrame(out, index=judge_scores.index)


def judge_distributions(judge_scores: pd.DataFrame) -> dict[str, float]:
    """Per judge and question: mean, std and 10th/90th percentiles of its scores, as metrics.

    A small judge's raw probabilities lean toward one answer; these show how far, generation by generation.
    """
    metrics = {}
    for column in judge_scores.columns:
        values = judge_scores[column].dropna().to_numpy()
        if len(values) == 0:
            continue
        name = column.removeprefix("judge_").replace("_", "/", 1)
        metrics[f"judge/{name}/mean"] = float(values.mean())
        metrics[f"judge/{name}/std"] = float(values.std())
        metrics[f"judge/{name}/p10"] = float(np.percentile(values, 10))
        metrics[f"judge/{name}/p90"] = float(np.percentile(values, 90))
    return metrics


# --- generative judging: the score written as text (slower; for backends without log-probabilities) ------------

_SCORE = re.compile(r"(?<![\d.])(0\.\d{3}|1\.000)(?![\d])")


def parse_score(text: str) -> float | None:
    """A score in [0, 1] written with three digits ('0.734'); None for anything else."""
    match = _SCORE.search(text)
    return float(match.group(1)) if match else None


def generative_scores(backend, judge: JudgeConfig, question: Question, texts: list[str], retries: int = 2,
                      seed: int = 0) -> np.ndarray:
    """P(first label) as a number the judge writes, parsed strictly; a bad answer is asked again up to `retries`
    times, and a judge that never answers validly gives NaN for that text (a failure, not a zero)."""
    instruction = question.instructions[judge.phrasing % len(question.instructions)]
    ask = (f'\n\nReply only with the probability that the answer is "{question.labels[0]}", as a number between '
           "0 and 1 with three digits, like 0.734.")
    prompts = [backend.chat_prompt(f"{instruction}\n\nText: {t[:MAX_TEXT_CHARS]}{ask}") for t in texts]
    scores = np.full(len(texts), np.nan)
    pending = list(range(len(texts)))
    settings = SamplingSettings(temperature=0.7, top_p=0.95, max_new_tokens=8)
    for attempt in range(1 + retries):
        if not pending:
            break
        outs = backend.generate([prompts[i] for i in pending], [settings] * len(pending), seed=seed + attempt, desc="judge (text)")
        for i, out in zip(pending, outs):
            score = parse_score(out.text)
            scores[i] = np.nan if score is None else score
        pending = [i for i in pending if np.isnan(scores[i])]
    return scores
