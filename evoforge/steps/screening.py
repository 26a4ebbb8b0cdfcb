"""Screening: spend judge calls on the candidates a learned value model (models.value_model) ranks best.

With `RunConfig.screen` = k > 0, a generation writes k x batch_size candidates; the value model, refitted on every
candidate judged in earlier generations, ranks them by predicted P(enters the archive), and only batch_size of
them are judged: the best ranked, plus a random share (`screen_explore`) drawn before the ranking, which keeps
the model's training data from narrowing to what it already likes and measures its live error without selection
bias. The rest are recorded in candidates.parquet unjudged (`judged` False, `screen` 'out', with their
`value_pred`). Until the model can be fitted (the first generation) a generation writes batch_size candidates and
judges them all.

Every past candidate is featurised against its own generation's context (the seed pool plus what had entered the
archive before it, and the archive snapshot before it), read back from the run folder, so a resumed run refits the
same model.
"""

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from evoforge.core.config import RunConfig
from evoforge.core.store import RunStore
from evoforge.steps.evolution import ArchiveOutcome, RunState
from models.value_model import Context, ValueModel, features

MIN_FIT_ROWS = 8  # fewer judged candidates than this: no model yet, the generation is judged unscreened
SCREEN_COLUMNS = ["judged", "screen", "value_pred", "value_quality"]


class EmbeddingMemo:
    """Embeddings by text, each text embedded once per process (past candidates are featurised every generation)."""

    def __init__(self, embedder):
        self.embedder, self.memo = embedder, {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            self.memo.update(zip(missing, self.embedder.embed(missing)))
        if not texts:
            return np.zeros((0, self.embedder.embed(["x"]).shape[1]), dtype=np.float32)
        return np.stack([self.memo[t] for t in texts])


_MEMOS: dict[int, EmbeddingMemo] = {}


def embedding_memo(embedder) -> EmbeddingMemo:
    return _MEMOS.setdefault(id(embedder), EmbeddingMemo(embedder))


def targets_of(axis_names: list[str]) -> list[str]:
    """What the value model predicts, as candidates.parquet names it: the judges' quality and each measure."""
    return ["quality"] + [f"measure_{a}" for a in axis_names]


def context_at(store: RunStore, generation: int, seed_pool: list[str], earlier: pd.DataFrame, embed) -> Context:
    """The context candidates of `generation` were written in: the seed pool plus the texts that had entered the
    archive before it (`earlier`: candidates of earlier generations), and the archive snapshot before it."""
    before = earlier[earlier["generation"] < generation]
    pool = list(seed_pool) + before.loc[before["inserted"].astype(bool), "text"].tolist()
    elites = store.read_elites(generation - 1)["text"].tolist() if generation > 0 else []
    return Context(pool, elites, embed(elites))


@dataclass(frozen=True)
class TrainingSet:
    x: np.ndarray
    targets: dict[str, np.ndarray]
    inserted: np.ndarray
    cids: np.ndarray


def training_set(store: RunStore, upto: int, axis_names: list[str], embed) -> TrainingSet:
    """Every judged, valid candidate of generations < `upto` in a run folder, featurised in its own context."""
    seed_pool = pd.read_parquet(store.root / "pool.parquet")["text"].tolist()
    candidates = store.read_candidates(upto)
    names = targets_of(axis_names)
    if not len(candidates):
        return TrainingSet(np.zeros((0, 0)), {n: np.zeros(0) for n in names}, np.zeros(0), np.zeros(0, dtype=int))
    judged = candidates[candidates["valid"] & candidates["quality"].notna()]
    blocks = []
    for generation, rows in judged.groupby("generation", sort=True):
        context = context_at(store, int(generation), seed_pool, candidates, embed)
        texts = rows["text"].tolist()
        blocks.append(features(texts, embed(texts), context))
    x = np.vstack(blocks) if blocks else np.zeros((0, 0))
    judged = judged.sort_values("generation", kind="stable")
    return TrainingSet(x, {n: judged[n].to_numpy(dtype=float) for n in names},
                       judged["inserted"].to_numpy(dtype=int), judged["cid"].to_numpy())


@dataclass
class ValueFit:
    """The value model fitted before a generation (None while too few candidates were judged) and its metrics
    (`value/...`, logged with the generation's)."""

    model: ValueModel | None
    metrics: dict[str, float]


def fit_value(state: RunState, generation: int, embedder) -> ValueFit:
    """Fit the value model on every candidate judged before `generation`; measure its held-out error first."""
    started = time.perf_counter()
    data = training_set(state.store, generation, state.domain.axis_names, embedding_memo(embedder))
    metrics = {"value/rows": float(len(data.x))}
    if len(data.x) < MIN_FIT_ROWS:
        return ValueFit(None, metrics)
    model = ValueModel().fit(data.x, data.targets, data.inserted, seed=state.config.seed + generation)
    metrics.update({f"value/{k}": v for k, v in model.heldout.items()})
    metrics["value/fit_seconds"] = time.perf_counter() - started
    return ValueFit(model, metrics)


def screened_batch(config: RunConfig, fit: ValueFit | None) -> int:
    """How many candidates a generation writes: screen x batch_size once a value model ranks them."""
    return config.batch_size * config.screen if fit is not None and fit.model is not None else config.batch_size


def screen(state: RunState, candidates: pd.DataFrame, fit: ValueFit, generation: int,
           embedder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a generation's candidates into those to judge (`batch_size` of the valid ones: a random
    `screen_explore` share, then the best by predicted P(enters the archive)) and those held back. Both carry the
    `SCREEN_COLUMNS`; the kept ones go through judging and the archive as usual, the held-back ones only into the
    record (`keep_screened`)."""
    config = state.config
    candidates = candidates.assign(value_pred=np.nan, value_quality=np.nan, judged=candidates["valid"],
                                   screen=np.where(candidates["valid"], "no_model", "invalid"))
    if fit.model is None:
        return candidates, candidates.iloc[:0]
    valid = np.flatnonzero(candidates["valid"].to_numpy())
    texts = candidates["text"].iloc[valid].tolist()
    elites = state.archive.elites()["text"].tolist()
    embed = embedding_memo(embedder)
    x = features(texts, embed(texts), Context(state.pool, elites, embed(elites)))
    predicted = fit.model.predict(x)
    candidates.iloc[valid, candidates.columns.get_loc("value_pred")] = predicted["p_insert"]
    candidates.iloc[valid, candidates.columns.get_loc("value_quality")] = predicted["quality"]
    rng = np.random.default_rng([config.seed, generation, 3])  # a stream of its own, apart from generation's
    keep = min(config.batch_size, len(valid))
    explore = rng.choice(len(valid), size=int(round(config.screen_explore * keep)), replace=False)
    rest = np.setdiff1d(np.arange(len(valid)), explore)
    ranked = rest[np.argsort(-predicted["p_insert"][rest], kind="stable")][: keep - len(explore)]
    label = np.full(len(valid), "out", dtype=object)
    label[explore], label[ranked] = "explore", "ranked"
    candidates.iloc[valid, candidates.columns.get_loc("screen")] = label
    candidates["judged"] = candidates["screen"].isin(["explore", "ranked"])
    held = candidates["screen"] == "out"
    return candidates[~held].reset_index(drop=True), candidates[held].reset_index(drop=True)


def keep_screened(outcome: ArchiveOutcome, held_back: pd.DataFrame) -> ArchiveOutcome:
    """The generation's outcome with the held-back candidates added back (unjudged, not inserted), in cid order."""
    if not len(held_back):
        return outcome
    rows = held_back.assign(status="screened_out", inserted=False, reward=np.nan)
    if "flagged" in outcome.candidates:  # the guards' columns, as for a candidate they did not flag
        rows = rows.assign(flagged=False, guard_flags="", guard_left_out="")
    merged = pd.concat([outcome.candidates, rows], ignore_index=True).sort_values("cid", ignore_index=True)
    return replace(outcome, candidates=merged)


def screen_metrics(fit: ValueFit, outcome: ArchiveOutcome) -> dict[str, float]:
    """The value model's metrics for the generation: its fit, how many candidates it held back, and its live error
    on the randomly kept ('explore') candidates, which it did not choose, so their error is not flattered."""
    candidates = outcome.candidates
    metrics = {**fit.metrics, "value/screened_out": float((candidates["screen"] == "out").sum())}
    explore = candidates[(candidates["screen"] == "explore") & candidates["quality"].notna()]
    if len(explore):
        metrics["value/explore_mae_quality"] = float((explore["value_quality"] - explore["quality"]).abs().mean())
    return metrics
