"""The metrics of one generation of an evolution run, as logged to MLflow each generation."""

import numpy as np

from evoforge.core.archive import IMPROVED, NEW_CELL, STATUS_NAMES
from evoforge.search.control import pct_metrics
from evoforge.judges.panel import Panel, bin_agreement, heldout_bins, judge_distributions, judgements_per_text, questions
from evoforge.steps.evolution import ArchiveOutcome, RunState
from models.backend import Backend


def generation_metrics(state: RunState, outcome: ArchiveOutcome, embedder=None) -> dict[str, float]:
    """The per-generation metrics logged to MLflow (read before `commit_generation` applies the outcome)."""
    candidates = outcome.candidates
    stats = state.archive.stats()
    metrics = {
        **stats,
        "candidates": len(candidates),
        "valid_candidates": int(candidates["valid"].sum()),
        "inserted": int(candidates["inserted"].sum()),
        "new_cells": int((candidates["status"] == STATUS_NAMES[NEW_CELL]).sum()),
        "improved_cells": int((candidates["status"] == STATUS_NAMES[IMPROVED]).sum()),
        "tokens_generated": int(candidates["new_tokens"].sum()),
        "continued": int(candidates["continued"].sum()),
        "flagged": int(candidates["flagged"].sum()) if "flagged" in candidates else 0,  # judge-gaming guards
        "guard_left_out": int((candidates["guard_left_out"] != "").sum()) if "guard_left_out" in candidates else 0,
        # Judgements made: every scored text x judge x question (the judge-call budget counts these).
        "judge_calls": int(candidates["quality"].notna().sum()) * judgements_per_text(state.config.judges, questions(state.domain))
        if "quality" in candidates else 0,
        "batch_mean_quality": float(candidates["quality"].mean()) if candidates["valid"].any() else 0.0,
        "epsilon": float(candidates["epsilon"].iloc[0]) if len(candidates) else 0.0,
        "pool_size": len(state.pool) + len(outcome.inserted_texts),
    }
    for expert in outcome.experts:
        metrics[f"expert/{expert.expert_id}/value"] = expert.value
        metrics[f"expert/{expert.expert_id}/picks"] = expert.picks
    metrics.update(judge_distributions(candidates.filter(like="judge_")))
    metrics.update(pct_metrics(state.domain, candidates))  # search 'pct': the loop's error and hit rate
    if embedder is not None:
        metrics["elite_diversity"] = elite_diversity(state, embedder)
    return metrics


def elite_diversity(state: RunState, embedder) -> float:
    """Mean pairwise cosine distance between the elites' sentence embeddings (each text embedded once)."""
    from models.embedder import mean_pairwise_distance

    elites = state.archive.elites()
    vectors = state.embeddings.values(elites, embedder.embed)
    return mean_pairwise_distance(np.stack(vectors)) if len(elites) else 0.0


def heldout_metrics(state: RunState, panel: Panel, backends: dict[str, Backend]) -> dict[str, float]:
    """How many of the elites a held-out judge (never used for selection) puts in the same cell, or in the same or
    a neighbouring one. Each elite is judged once, when it first appears."""
    elites = state.archive.elites()
    theirs = state.heldout.values(
        elites, lambda texts: heldout_bins(panel, backends, state.archive.bin_index, state.domain.axis_names, texts))
    ours = elites[[f"bin_{a}" for a in state.domain.axis_names]].to_numpy(dtype=int)
    theirs = np.array(theirs).reshape(ours.shape)
    same, near = bin_agreement(ours, theirs)
    return {"heldout/same_cell": same, "heldout/agreement": near}
