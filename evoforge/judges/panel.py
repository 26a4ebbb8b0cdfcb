"""AI feedback: judges score texts by answering two-answer questions; a panel combines them.

Judge kinds (`JudgeConfig.kind`):
- `logprob` (QDAIF): P(first label) normalised over the two labels, read from one forward pass per batch of texts.
- `label`: the more likely of the two labels, as 1.0 or 0.0 (a hard answer, e.g. for voting).
- `generative`: the judge writes the probability as a 3-digit number, parsed strictly and retried; a judge that
  never answers validly gives NaN (a failure, not a zero).
Each judge asks every question in its own format and phrasing. The `Panel` then calibrates each judge's scores
(`evoforge.judges.calibration`) and combines them per question (`evoforge.judges.ensembles`), fitted on the domain's reference
labels where a method needs them.
"""

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evoforge.judges.calibration import CONTENT_FREE_TEXTS, Calibrator, fit_calibrator
from evoforge.core.config import JudgeConfig
from evoforge.core.domain import Domain, Question, answer_labels
from evoforge.judges.ensembles import COMBINE_METHODS, NEEDS_REFERENCES, Ensemble, fit_ensemble, panel_agreement
from evoforge.judges.measures import accuracy, auc, out_of_fold
from models.backend import SamplingSettings
from evoforge.judges.guards import guard_texts
from evoforge.judges.embedding import pole_scores, with_poles

MAX_TEXT_CHARS = 1500  # keeps judge prompts well inside a small model's context


@dataclass(frozen=True)
class QuestionPrompt:
    prompts: list[str]
    options: tuple[str, str]


def question_prompts(backend, judge: JudgeConfig, question: "Question | list[Question]",
                     texts: list[str]) -> QuestionPrompt:
    """Prompts asking `question` about each text, in the judge's format, and the two answers as continuations.
    `question` may be a list, one per text with the same labels (e.g. each answer's own task), so texts about
    many tasks score in one batched call."""
    per_text = question if isinstance(question, list) else [question] * len(texts)
    labels = per_text[0].labels if per_text else question.labels
    instructions = [q.instructions[judge.phrasing % len(q.instructions)] for q in per_text]
    texts = [t[:MAX_TEXT_CHARS] for t in texts]
    if judge.format == "chat" and backend.has_chat_template:
        # The chat template's answer starts right after the assistant header: options carry no leading space.
        prompts = [backend.chat_prompt(f"{i}\n\nText: {t}") for i, t in zip(instructions, texts)]
        return QuestionPrompt(prompts, tuple(labels))
    prompts = [f"### Instruction:\n{i}\n\n### Input:{t}\n\n### Response:" for i, t in zip(instructions, texts)]
    return QuestionPrompt(prompts, tuple(f" {label}" for label in labels))


def first_label_probability(logprobs: np.ndarray) -> np.ndarray:
    """P(first option) normalised over the two options, from log-probabilities of shape (n, 2)."""
    logprobs = np.asarray(logprobs, dtype=float)
    return 1.0 / (1.0 + np.exp(logprobs[:, 1] - logprobs[:, 0]))




def questions(domain: Domain) -> dict[str, Question]:
    """The questions every judge asks: 'quality' first, then each axis by name (with its poles for embedding
    judges: the axis's own, else the domain's description and each label)."""
    return {"quality": domain.quality, **{a.name: with_poles(a, domain.description) for a in domain.axes}}


def answers(judge: JudgeConfig, question: Question) -> bool:
    """Whether `judge` answers `question`: an embedding judge answers only the questions with poles (the axes)."""
    return judge.kind != "embedding" or question.poles is not None


def judgements_per_text(judges: list[JudgeConfig], questions: dict[str, Question]) -> int:
    """Judgements one text costs: every judge x every question it answers."""
    return sum(answers(j, q) for j in judges for q in questions.values())


def domain_columns(domain: Domain) -> dict[str, str]:
    """Where the panel's score for each of a domain's questions goes: `quality` and `measure_<axis>`."""
    return {q: ("quality" if q == "quality" else f"measure_{q}") for q in questions(domain)}


def judge_scores(backend, judge: JudgeConfig, question: Question, texts: list[str], seed: int = 0) -> np.ndarray:
    """One judge's score in [0, 1] (NaN: failed) for each text on one question, by the judge's kind."""
    if judge.kind == "embedding":
        return pole_scores(judge.model, question, texts)
    if judge.kind == "generative":
        if isinstance(question, list):
            raise ValueError("generative judges ask one question per call; pass one Question, not one per text")
        return generative_scores(backend, judge, question, texts, seed=seed)
    qp = question_prompts(backend, judge, question, texts)
    logprobs = backend.option_logprobs(qp.prompts, list(qp.options), desc=f"judge {judge.name}/{qp.options[0]}")
    if judge.kind == "label":
        return (logprobs[:, 0] >= logprobs[:, 1]).astype(float)
    return first_label_probability(logprobs)


def judge_texts(backends: dict, judges: list[JudgeConfig], questions: dict[str, Question], texts: list[str]) -> pd.DataFrame:
    """Every judge's raw score for every question, as columns `judge_<judge>_<question>`, one row per text."""
    scores = {
        f"judge_{judge.name}_{qname}": judge_scores(backends.get(judge.model), judge, question, texts)
        for judge in judges
        for qname, question in questions.items()
    }
    return pd.DataFrame(scores, index=range(len(texts)))


@dataclass
class QuestionRule:
    """One question's calibrators (one per judge) and the ensemble that combines the calibrated scores."""

    calibrators: list[Calibrator]
    ensemble: Ensemble

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.column_stack([c(raw[:, j]) for j, c in enumerate(self.calibrators)])

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return self.ensemble.combine(self.calibrate(raw))


def fit_rule(raw, labels, calibrations: list[str], content_free: list, combine: str) -> QuestionRule:
    """Calibrators per judge and the ensemble over them, fitted on the judges' raw scores `raw` (references x
    judges) with `labels` (1, 0 or NaN; both None when the question has no references)."""
    calibrators = [fit_calibrator(m, None if raw is None else raw[:, j], labels, content_free[j])
                   for j, m in enumerate(calibrations)]
    rule = QuestionRule(calibrators, Ensemble())
    rule.ensemble = fit_ensemble(combine, None if raw is None else rule.calibrate(raw), labels)
    return rule


@dataclass
class Panel:
    """The judges, and per question how their scores are calibrated and combined. `report` holds each judge's
    and each combination method's accuracy and AUC on the reference labels (out of fold where fitted)."""

    judges: list[JudgeConfig]
    questions: dict[str, Question]
    rules: dict[str, QuestionRule]
    columns: dict[str, str]
    report: pd.DataFrame = field(default_factory=pd.DataFrame)
    guard: bool = True  # judge-gaming guards (evoforge.judges.guards): neutralised prompts and injection flags

    @property
    def answer_labels(self) -> list[str]:
        return answer_labels(self.questions.values())

    def judge(self, backends: dict, texts: list[str], questions: dict | None = None) -> pd.DataFrame:
        """Calibrated scores per judge (`judge_<j>_<q>`; the raw ones as `raw_<j>_<q>` where calibrated), the
        panel's combined score per question (in the column `columns[q]`) and, with the guards on, `flagged` and
        `guard_flags` (why: ';'-separated) for texts that address their judge, and `guard_left_out` (the sentence
        the judges did not read, see `evoforge.judges.guards.guard_texts`). `questions` may give, per question
        name, one Question per text (texts answering different tasks, judged in one batch); default: the panel's
        own."""
        prompt_texts, reasons, left_out = guard_texts(texts, self.answer_labels) if self.guard else (texts, [], [])
        raw = judge_texts(backends, self.judges, questions or self.questions, prompt_texts)
        out = {}
        if self.guard:
            out["flagged"] = np.array([bool(r) for r in reasons])
            out["guard_flags"] = np.array([";".join(r) for r in reasons], dtype=object)
            out["guard_left_out"] = np.array(left_out, dtype=object)
        for q, rule in self.rules.items():
            names = [f"judge_{j.name}_{q}" for j in self.judges]
            calibrated = rule.calibrate(raw[names].to_numpy())
            for j, name in enumerate(names):
                if not answers(self.judges[j], self.questions[q]):
                    continue  # no column for a question the judge is not asked
                if rule.calibrators[j].method != "none":
                    out[f"raw_{self.judges[j].name}_{q}"] = raw[name].to_numpy()
                out[name] = calibrated[:, j]
            out[self.columns[q]] = rule.ensemble.combine(calibrated)
        return pd.DataFrame(out, index=raw.index)


FITTED_CALIBRATIONS = ("platt", "isotonic", "anchors")  # fitted on labelled texts


def resolve_combine(combine: str, has_labels: bool) -> str:
    """What `combine: auto` means for one question: Bayesian model averaging where the question has labelled texts
    (references, or weak references) to weigh the judges on, so a judge that cannot tell the two answers apart
    gets almost no weight instead of pulling every score toward the middle; the plain mean where it has none."""
    if combine != "auto":
        return combine
    return "bma" if has_labels else "mean"


def needs_references(judges: list[JudgeConfig], combine: str) -> bool:
    return combine in NEEDS_REFERENCES or any(j.calibration in FITTED_CALIBRATIONS for j in judges)


def fit_panel(backends: dict, judges: list[JudgeConfig], questions: dict[str, Question], combine: str = "mean",
              references: pd.DataFrame | None = None, columns: dict[str, str] | None = None,
              guard: bool = True, auto_calibration: str = "platt") -> Panel:
    """Score the content-free inputs (for contextual calibration) and the reference texts, fit each question's
    rule, and measure every judge and every combination method on the references. `auto_calibration`: what
    calibration 'auto' means where a question has labels ('anchors' for weak references)."""
    if references is None and needs_references(judges, combine):
        wants = [f"judge {j.name}: calibration={j.calibration}" for j in judges if j.calibration in FITTED_CALIBRATIONS]
        wants += [f"combine={combine}"] if combine in NEEDS_REFERENCES else []
        raise ValueError(f"{', '.join(wants)} needs reference labels: give the domain a `references:` file and keep "
                         "judge_references on, or choose calibration none/contextual and combine mean/weighted/vote")
    content_free = {q: [None] * len(judges) for q in questions}
    for j, judge in enumerate(judges):
        if judge.calibration == "contextual":
            cf = judge_texts(backends, [judge], questions, list(CONTENT_FREE_TEXTS))
            for q in questions:
                content_free[q][j] = float(np.nanmean(cf[f"judge_{judge.name}_{q}"]))
    raw_refs = None if references is None else judge_texts(backends, judges, questions, references["text"].tolist())
    rules, report = {}, []
    for q in questions:
        has_labels = references is not None and q in references and references[q].notna().any()
        labels = references[q].to_numpy(dtype=float) if has_labels else None
        raw = raw_refs[[f"judge_{j.name}_{q}" for j in judges]].to_numpy() if has_labels else None
        # 'auto' is Platt scaling (anchors for weak labels) where this question has labels, else the raw scores.
        # An embedding judge does not answer a question without poles (quality): nothing of its to calibrate.
        calibrations = ["none" if not answers(j, questions[q])
                        else (auto_calibration if has_labels else "none") if j.calibration == "auto" else j.calibration
                        for j in judges]
        rules[q] = fit_rule(raw, labels, calibrations, content_free[q], resolve_combine(combine, has_labels))
        if has_labels:
            report += reference_report(q, judges, raw, labels, references["text"].str.len().to_numpy(),
                                       content_free[q], calibrations)
    return Panel(judges, questions, rules, columns or {q: q for q in questions}, pd.DataFrame(report), guard)


def reference_report(question: str, judges: list[JudgeConfig], raw: np.ndarray, labels: np.ndarray,
                     lengths: np.ndarray, content_free: list, calibrations: list[str]) -> list[dict]:
    """Rows for one question: each judge raw and calibrated, then each combination method over the calibrated
    judges. Fitted steps are scored out of fold (5 folds), so no method is credited for memorising labels."""
    labelled = ~np.isnan(labels)
    agreement = panel_agreement(raw[labelled])
    rows = []
    for j, judge in enumerate(judges):
        score = raw[:, j]
        calibrated = out_of_fold(
            lambda s, y, j=j: fit_calibrator(calibrations[j], s, y, content_free[j]), score, labels)
        ok = labelled & ~np.isnan(score)
        # Length bias: rank correlation of the score with the text's length (0: none).
        length_bias = pd.Series(score[ok]).corr(pd.Series(lengths[ok]), method="spearman") if ok.sum() > 2 else np.nan
        rows.append({
            "question": question, "name": judge.name, "kind": judge.kind, "calibration": calibrations[j],
            "accuracy_raw": accuracy(score[labelled], labels[labelled]),
            "auc_raw": auc(score[labelled], labels[labelled]),
            "accuracy": accuracy(calibrated[labelled], labels[labelled]),
            "auc": auc(calibrated[labelled], labels[labelled]),
            "failed": float(np.isnan(score).mean()),
            "panel_agreement": float(agreement[j]),
            "length_bias": float(length_bias),
        })
    for method in COMBINE_METHODS:
        combined = out_of_fold(lambda s, y, m=method: fit_rule(s, y, calibrations, content_free, m), raw, labels)
        rows.append({"question": question, "name": f"combine:{method}", "kind": "panel", "calibration": "",
                     "accuracy": accuracy(combined[labelled], labels[labelled]),
                     "auc": auc(combined[labelled], labels[labelled]),
                     "failed": float(np.isnan(combined[labelled]).mean())})
    return rows


def report_metrics(report: pd.DataFrame) -> dict[str, float]:
    """The reference report as MLflow metrics `ref/<question>/<judge or combine-method>/<stat>`."""
    metrics = {}
    for row in report.to_dict("records"):
        for stat in ("accuracy_raw", "auc_raw", "accuracy", "auc", "failed", "panel_agreement", "length_bias"):
            value = row.get(stat)
            if value is not None and not pd.isna(value):
                metrics[f"ref/{row['question']}/{row['name'].replace(':', '-')}/{stat}"] = float(value)
    return metrics


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
    for column in judge_scores.columns:
        metrics[f"judge/{column.removeprefix('judge_').replace('_', '/', 1)}/failed"] = float(judge_scores[column].isna().mean())
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


# --- the held-out judge: another phrasing in the other prompt format, never used to select anything -------------

# The runs' default judges ask phrasings 0 and 1 in the chat format; this one asks phrasing 2 (wrapping around on a
# domain with fewer) in the instruct format. A method that wins by gaming the run's own judges shows up as elites
# this judge places elsewhere.
HELD_OUT_JUDGE = JudgeConfig(name="heldout", format="instruct", phrasing=2)


def fit_heldout_panel(backends: dict, domain: Domain, references: pd.DataFrame | None,
                      auto_calibration: str = "platt") -> Panel:
    """The held-out judge as a one-judge panel, calibrated like the run's judges (on the run's references, where
    any)."""
    return fit_panel(backends, [HELD_OUT_JUDGE], questions(domain), "mean", references, domain_columns(domain),
                     guard=False, auto_calibration=auto_calibration)


def heldout_bins(panel: Panel, backends: dict, bin_index, axis_names: list[str], texts: list[str]) -> np.ndarray:
    """The grid bins (texts x axes) the held-out judge puts `texts` in; `bin_index` is the archive's binning."""
    scores = panel.judge(backends, texts)
    return bin_index(scores[[f"measure_{a}" for a in axis_names]].to_numpy())


def bin_agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """Share of elites in the same cell, and in the same or a neighbouring cell (at most one bin away on every
    axis), by two judges' bins (elites x axes); NaN for no elites."""
    if len(ours) == 0:
        return float("nan"), float("nan")
    gap = np.abs(np.asarray(theirs) - np.asarray(ours)).max(axis=1)
    return float((gap == 0).mean()), float((gap <= 1).mean())
