"""Picking one text among many: the one piece of code every place that keeps one answer out of several calls.

The tournament's kept answer, and any aggregator or generator ensemble that must choose one text, call `select`.
Each method is a plain function of a frame of per-answer features (one row per answer) and returns the row it keeps:

- `judges`: the highest judge score (`score`: the panel's relevance/coherence mean). Rewards fluent text, not
  true text: on the shipped question set it picks no better than a random answer (see the README's `ask` table).
- `consensus`: self-consistency. Answers are clustered by how much they say the same thing (`similarity_matrix`:
  the words they add to the task, or MiniLM embeddings); the largest cluster wins and, inside it, the best-scored
  answer (by `score` where judges ran, else the most central one).
- `verifier`: the highest P(correct) from a log-prob judge asked whether the answer is correct for the task
  (`verifier_scores`), calibrated (Platt) on a labelled split.
- `stacked`: a logistic regression over the features above (judge score, agreement, verifier), fitted on the
  labelled split with `evoforge.judges.ensembles` (stacking); keeps the highest predicted P(correct).
- `ranker`: seed 002's ranking model (`evoforge.judges.ranker`): a pairwise linear ranker over each answer's
  cosine to the task and to the other answers, length, word overlap with the task and with the others, judge
  score, agreement and a value model's prediction where given (`answer_features`), fitted on the labelled split.

Generator ensembles (the seed's voting and weighted averaging, applied to whole answers: the experts' models may
differ in tokenizer and sampling settings, and each answer is drawn in one batched call, so a token-level average
would need every expert to decode in lockstep; an answer-level combination needs neither):

- `vote`: every answer votes for its normalised short answer (`short_answer`: the words it adds to the task); the
  most common one wins (ties: the earlier answer's), and among its answers the best-scored (else most central).
- `weighted`: the consensus clusters, each answer's vote weighted by its expert's weight (`expert_weights`, from
  the learned values) times its judge score where judges ran; the heaviest cluster wins.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from evoforge.judges.calibration import Calibrator, fit_calibrator
from evoforge.judges.ensembles import Ensemble, fit_ensemble
from evoforge.judges.ranker import Ranker, fit_ranker
from evoforge.core.words import STOPWORDS, words

SelectionMethod = Literal["judges", "consensus", "verifier", "stacked", "vote", "weighted", "ranker"]
SELECTION_METHODS: tuple[str, ...] = ("judges", "consensus", "verifier", "stacked", "vote", "weighted", "ranker")
NEEDS_LABELS = {"stacked", "ranker"}  # fitted on the labelled split; the verifier's Platt map is monotone, so optional
STACKED_FEATURES = ("score", "agreement", "verifier")

def short_answer(text: str, task: str = "") -> frozenset[str]:
    """What an answer adds to its task: its words minus stopwords and minus the task's own words."""
    known = set(words(task)) | STOPWORDS
    return frozenset(w for w in words(text) if w not in known)


def contains_answer(text: str, accepted: list[str]) -> bool:
    """Ground truth for the question set: the answer contains one accepted answer as whole words."""
    said = f" {' '.join(words(text))} "
    return any(f" {' '.join(words(a))} " in said for a in accepted if words(a))


def word_similarity(texts: list[str], task: str = "") -> np.ndarray:
    """Jaccard overlap of the answers' short forms (1.0 on the diagonal; 0 where an answer adds nothing)."""
    forms = [short_answer(t, task) for t in texts]
    n = len(forms)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            union = forms[i] | forms[j]
            sim[i, j] = sim[j, i] = len(forms[i] & forms[j]) / len(union) if union else 0.0
    return sim


def embedding_similarity(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit-length embeddings (MiniLM)."""
    embeddings = np.asarray(embeddings, dtype=float)
    return embeddings @ embeddings.T


def clusters(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster labels 0, 1, ... (0 the largest): repeatedly, the unassigned answer with the most unassigned
    neighbours (similarity >= threshold) founds a cluster with them. Deterministic; ties go to the earlier answer."""
    similarity = np.asarray(similarity, dtype=float)
    n = len(similarity)
    labels = np.full(n, -1)
    close = similarity >= threshold
    np.fill_diagonal(close, True)
    cluster = 0
    while (labels < 0).any():
        free = labels < 0
        support = (close & free[None, :]).sum(axis=1) * free  # unassigned neighbours of each unassigned answer
        founder = int(np.argmax(support))
        labels[close[founder] & free] = cluster
        cluster += 1
    return labels


def agreement(labels: np.ndarray) -> np.ndarray:
    """Each answer's share of the other answers in its cluster (0: alone; 1: all agree)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        return np.ones(n)
    sizes = np.bincount(labels)[labels]
    return (sizes - 1) / (n - 1)


def centrality(similarity: np.ndarray) -> np.ndarray:
    """Mean similarity to the other answers (the 'most similar to the others' rule)."""
    similarity = np.asarray(similarity, dtype=float)
    n = len(similarity)
    if n < 2:
        return np.ones(n)
    return (similarity.sum(axis=1) - np.diag(similarity)) / (n - 1)


def consensus_features(similarity: np.ndarray, threshold: float) -> pd.DataFrame:
    """The consensus columns `select` reads: `cluster`, `agreement` and `centrality`."""
    labels = clusters(similarity, threshold)
    return pd.DataFrame({"cluster": labels, "agreement": agreement(labels), "centrality": centrality(similarity)})


def answer_features(texts: list[str], task: str, embeddings: np.ndarray, task_embedding: np.ndarray) -> pd.DataFrame:
    """Seed 002's ranking features of one task's answers (unit-length MiniLM `embeddings`, one row per answer):
    cosine to the task and mean cosine to the other answers, log word count, the share of the answer's keywords
    (words less stopwords) that are the task's, and the mean overlap of what it adds with what the others add (word
    `centrality`)."""
    embeddings = np.asarray(embeddings, dtype=float).reshape(len(texts), -1)
    task_words = set(words(task))
    said = [words(t) for t in texts]
    keywords = [[x for x in w if x not in STOPWORDS] for w in said]
    return pd.DataFrame({
        "task_cosine": embeddings @ np.asarray(task_embedding, dtype=float).ravel(),
        "peer_cosine": centrality(embedding_similarity(embeddings)),
        "log_words": np.log1p([len(w) for w in said]),
        "task_overlap": [sum(x in task_words for x in k) / len(k) if k else 0.0 for k in keywords],
        "peer_overlap": centrality(word_similarity(texts, task)),
    })


def vote_forms(texts: list[str], task: str = "") -> np.ndarray:
    """Each answer's vote: an id of its normalised short answer, 0 the most common (ties: the earlier answer's),
    -1 where the answer adds nothing to the task (it votes for nothing)."""
    forms = [short_answer(t, task) for t in texts]
    counts: dict[frozenset, int] = {}
    for form in forms:
        if form:
            counts[form] = counts.get(form, 0) + 1
    first = {form: forms.index(form) for form in counts}
    ranked = sorted(counts, key=lambda f: (-counts[f], first[f]))
    ids = {form: i for i, form in enumerate(ranked)}
    return np.array([ids.get(form, -1) for form in forms], dtype=int)


def expert_weights(values) -> np.ndarray:
    """Each expert's vote weight from its learned value: a softmax over values with the values' own spread as
    temperature (scale-free: the best expert weighs 1, the worst 1/e, equal values weigh equally)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return values
    spread = values.max() - values.min()
    return np.exp((values - values.max()) / spread) if spread > 0 else np.ones_like(values)


def agreement_reward(labels: np.ndarray, kept: int) -> np.ndarray:
    """Each answer's reward for its expert: 1.0 where it says what the kept answer says (same cluster), else 0.0.
    Over many tasks an expert's value then ranks it by how often it is right, as far as consensus is."""
    labels = np.asarray(labels)
    return (labels == labels[kept]).astype(float)


# --- the methods: each maps a features frame to the position of the kept answer ---------------------------------


def _best(values) -> int:
    """Position of the largest value; NaN (an unscored answer) is never kept while a scored one exists."""
    values = np.asarray(values, dtype=float)
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values)))


def select_judges(features: pd.DataFrame) -> int:
    return _best(features["score"])


def _best_member(features: pd.DataFrame, members: np.ndarray) -> int:
    """The best of a group of answers: by judge score where there is one, else the most central."""
    tie = features["score"] if "score" in features and features["score"].notna().any() else features["centrality"]
    return int(members[_best(tie.to_numpy()[members])])


def select_consensus(features: pd.DataFrame) -> int:
    """The best answer of the largest cluster: by judge score where there is one, else the most central."""
    return _best_member(features, np.flatnonzero(features["cluster"].to_numpy() == 0))  # cluster 0 is the largest


def select_vote(features: pd.DataFrame) -> int:
    """The best answer among those voting for the most common short answer (`form` 0); where no answer adds
    anything to the task, the consensus pick."""
    members = np.flatnonzero(features["form"].to_numpy() == 0)
    return _best_member(features, members) if len(members) else select_consensus(features)


def select_weighted(features: pd.DataFrame) -> int:
    """The best answer of the heaviest cluster: each answer weighs its expert's `weight` times its judge score
    (1 where judges did not run)."""
    score = features["score"] if "score" in features and features["score"].notna().any() else 1.0
    votes = (features["weight"] * score).fillna(0.0).to_numpy(dtype=float)
    labels = features["cluster"].to_numpy()
    heaviest = int(np.argmax(np.bincount(labels, weights=votes)))  # ties: the lower label, the larger cluster
    return _best_member(features, np.flatnonzero(labels == heaviest))


def select_verifier(features: pd.DataFrame) -> int:
    return _best(features["verifier"])


def select_stacked(features: pd.DataFrame, stacker: Ensemble) -> int:
    return _best(stacker.combine(stacked_matrix(features)))


def select_ranker(features: pd.DataFrame, ranker: Ranker) -> int:
    return _best(ranker.score(features))


def stacked_matrix(features: pd.DataFrame) -> np.ndarray:
    """The stacked model's inputs, as probabilities (ensembles' stacking takes their log-odds)."""
    return features[list(STACKED_FEATURES)].to_numpy(dtype=float)


def fit_stacker(features: pd.DataFrame, correct) -> Ensemble:
    """Stacking (a logistic regression on the features' log-odds) fitted on labelled answers."""
    return fit_ensemble("stacking", stacked_matrix(features), np.asarray(correct, dtype=float))


def needed_features(method: str) -> set[str]:
    """Which features a method reads, so callers compute only those (judging and verifying cost forward passes)."""
    return {"judges": {"score"}, "consensus": {"cluster", "score"}, "verifier": {"verifier"},
            "stacked": set(STACKED_FEATURES), "vote": {"form", "score"},
            "weighted": {"cluster", "weight", "score"}, "ranker": {"agreement", "score"}}[method]


def select(method: str, features: pd.DataFrame, stacker: Ensemble | None = None, ranker: Ranker | None = None) -> int:
    """The position (0-based row) of the answer `method` keeps."""
    if method == "judges":
        return select_judges(features)
    if method == "consensus":
        return select_consensus(features)
    if method == "verifier":
        return select_verifier(features)
    if method == "vote":
        return select_vote(features)
    if method == "weighted":
        if "weight" not in features:
            raise ValueError("selection=weighted needs each answer's expert weight (`weight`, from expert_weights)")
        return select_weighted(features)
    if method == "stacked":
        if stacker is None:
            raise ValueError("selection=stacked needs a model fitted on the labelled split (fit_stacker)")
        return select_stacked(features, stacker)
    if method == "ranker":
        if ranker is None:
            raise ValueError("selection=ranker needs a ranker fitted on the labelled split (fit_selector)")
        return select_ranker(features, ranker)
    raise ValueError(f"selection: unknown method {method!r}; expected one of {SELECTION_METHODS}")


# --- the verifier: a log-prob judge of correctness ---------------------------------------------------------------

VERIFIER_INSTRUCTION = ("Question: {task}\n\nProposed answer: {answer}\n\nIs the proposed answer correct? "
                        'Answer "yes" or "no".')


def verifier_scores(backend, tasks: list[str], answers: list[str]) -> np.ndarray:
    """Raw P("yes") that each answer is correct for its task (parallel lists: many tasks score in one call)."""
    from evoforge.judges.panel import MAX_TEXT_CHARS, first_label_probability

    prompts = [backend.chat_prompt(VERIFIER_INSTRUCTION.replace("{task}", t).replace("{answer}", a[:MAX_TEXT_CHARS]))
               for t, a in zip(tasks, answers)]
    return first_label_probability(backend.option_logprobs(prompts, ["yes", "no"], desc="verifier"))


def minilm(embedder=None):
    """The given embedder, else MiniLM (loaded once per process by models.embedder)."""
    if embedder is not None:
        return embedder
    from models.embedder import load_embedder

    return load_embedder("minilm")


@dataclass
class Consensus:
    """How answers are compared for consensus: `words` (short forms) or `embedding` (MiniLM), and the threshold."""

    similarity: Literal["words", "embedding"] = "words"
    threshold: float = 0.5

    def matrix(self, texts: list[str], task: str = "", embedder=None) -> np.ndarray:
        if self.similarity == "words":
            return word_similarity(texts, task)
        return embedding_similarity(minilm(embedder).embed(texts))

    def features(self, texts: list[str], task: str = "", embedder=None) -> pd.DataFrame:
        return consensus_features(self.matrix(texts, task, embedder), self.threshold)


# --- a selector: the method, its consensus rule and what was fitted on the labelled split -------------------------

LABELLED_PATH = Path(__file__).resolve().parents[2] / "data" / "ask" / "labelled.jsonl"


def load_labelled(path: str | Path = LABELLED_PATH) -> pd.DataFrame:
    """The labelled split: answers written by the tournament's experts to the benchmark's labelled questions, with
    `group` (one question's answers), `task`, `text`, `correct` (0/1) and their judge `score` and `verifier_raw`
    as measured when the benchmark wrote it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled split: {path} does not exist; run benchmarks/ask_bench.py "
                                "--write-labelled, or choose selection judges or consensus (they need no labels)")
    frame = pd.read_json(path, lines=True)
    missing = {"group", "task", "text", "correct", "score", "verifier_raw"} - set(frame.columns)
    if missing:
        raise ValueError(f"labelled split {path}: missing columns {sorted(missing)}")
    return frame


@dataclass
class Selector:
    """What `select` needs beyond the features: the method, the consensus rule, and, for the verifier, stacked
    and ranker methods, the verifier's calibration, the stacked model and the ranker (fitted on the labelled
    split)."""

    method: str = "consensus"
    consensus: Consensus = field(default_factory=Consensus)
    calibrator: Calibrator = field(default_factory=Calibrator)
    stacker: Ensemble | None = None
    ranker: Ranker | None = None

    @property
    def verifies(self) -> bool:
        return self.method in ("verifier", "stacked")

    def features(self, texts: list[str], task: str, scores=None, verifier_raw=None, embedder=None,
                 weights=None, values=None) -> pd.DataFrame:
        """The features frame for one task's answers: judge `score` (if given), consensus columns, the vote
        (`form`), each answer's expert `weight` (if given), `verifier`; for the ranker its `answer_features`
        and a value model's prediction `value` (if given)."""
        frame = self.consensus.features(texts, task, embedder)
        if self.method == "ranker":
            embedded = minilm(embedder).embed([task, *texts])
            frame = frame.join(answer_features(texts, task, embedded[1:], embedded[0]))
        if values is not None:
            frame["value"] = np.asarray(values, dtype=float)
        frame["form"] = vote_forms(texts, task)
        if weights is not None:
            frame["weight"] = np.asarray(weights, dtype=float)
        if scores is not None:
            frame["score"] = np.asarray(scores, dtype=float)
        if verifier_raw is not None:
            frame["verifier_raw"] = np.asarray(verifier_raw, dtype=float)
            frame["verifier"] = self.calibrator(frame["verifier_raw"].to_numpy())
        return frame

    def pick(self, features: pd.DataFrame) -> int:
        return select(self.method, features, self.stacker, self.ranker)


def labelled_features(selector: Selector, labelled: pd.DataFrame, embedder=None, values=None) -> pd.DataFrame:
    """The selector's features of every labelled answer, task by task (consensus among each task's answers), with
    its `group` and `correct`; `values` (texts -> a value model's predictions) adds `value`."""
    parts = []
    for group_id, group in labelled.groupby("group", sort=False):
        texts = group["text"].tolist()
        feats = selector.features(texts, group["task"].iloc[0], group["score"] if "score" in group else None,
                                  group["verifier_raw"] if "verifier_raw" in group else None, embedder,
                                  values=values(texts) if values is not None else None)
        parts.append(feats.assign(group=group_id, correct=group["correct"].to_numpy()))
    return pd.concat(parts, ignore_index=True)


def fit_selector(method: str, consensus: Consensus | None = None, labelled: pd.DataFrame | None = None,
                 embedder=None, values=None) -> Selector:
    """A selector for `method`; the verifier, stacked and ranker methods are fitted on the labelled split (loaded
    from the shipped file unless given): Platt scaling of the verifier's P(correct), then the stacked model on the
    answers' judge score, agreement (recomputed with this consensus rule) and calibrated verifier, or the ranker
    on `answer_features`, judge score, agreement and, with `values` (texts -> a value model's predictions), the
    predicted value; the fitted models live in the selector (refitted per `ask`: a fraction of a second)."""
    if method not in SELECTION_METHODS:
        raise ValueError(f"selection: unknown method {method!r}; expected one of {SELECTION_METHODS}")
    selector = Selector(method, consensus or Consensus())
    if method not in NEEDS_LABELS and not selector.verifies:
        return selector
    labelled = load_labelled() if labelled is None else labelled
    if selector.verifies:
        selector.calibrator = fit_calibrator("platt", labelled["verifier_raw"], labelled["correct"])
    if method == "stacked":
        frame = labelled_features(selector, labelled, embedder)
        selector.stacker = fit_stacker(frame, frame["correct"])
    if method == "ranker":
        frame = labelled_features(selector, labelled, embedder, values)
        selector.ranker = fit_ranker(frame, frame["correct"], frame["group"])
    return selector
