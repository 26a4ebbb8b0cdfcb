"""Evaluation: models fill fresh archives on the same budget, seed and judges; the promotion rule decides.

Each evaluated model (an "arm": the candidate, the champion, and optional baselines on the base model) runs the
same generation steps as an evolution run, with its own run folder, so its candidates and archive are Parquet too.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from evoforge.core.config import RunConfig
from evoforge.steps.evolution import (
    archive_step,
    commit_generation,
    fit_run_panel,
    generate_step,
    judge_step,
    prepare_run,
)
from evoforge.steps.run_metrics import generation_metrics
from models.resolve import short_name


def fill_archive(
    config: RunConfig, generator: str, search: str, label: str, out: Path, backends: dict, embedder=None,
    held_out=None, panel=None,
) -> dict:
    """One arm: `config.evaluate.generations` generations of `config.evaluate.batch_size` candidates from
    `generator`, prompted by `search`. Returns its scores and its QD score per generation."""
    e = config.evaluate
    arm = config.model_copy(
        update={
            "generator_models": [generator], "search": search, "generations": e.generations,
            "batch_size": e.batch_size, "run_name": label, "out": str(out),
        }
    )
    state = prepare_run(arm)
    panel = panel or fit_run_panel(state, backends)  # the same fitted judges for every arm (fitted here when None)
    metrics = {}
    for number in range(state.completed, arm.generations):
        judged = judge_step(panel, generate_step(state, number, backends), backends)
        outcome = archive_step(state.archive, state.experts, judged, number, arm)
        metrics = generation_metrics(state, outcome, embedder=embedder)
        commit_generation(state, number, outcome, metrics, tracker=None)
    candidates = state.store.read_candidates(state.completed)
    valid = candidates[candidates["valid"]]
    scores = {
        **state.archive.stats(),
        "candidate_mean_quality": float(valid["quality"].mean()) if len(valid) else 0.0,
        "valid_share": float(candidates["valid"].mean()) if len(candidates) else 0.0,
    }
    if embedder is not None:
        from models.embedder import mean_pairwise_distance

        scores["candidate_diversity"] = mean_pairwise_distance(embedder.embed(valid["text"].tolist()))
        scores["elite_diversity"] = metrics.get("elite_diversity", np.nan)
    if held_out:
        from models.finetune import mean_loss

        backend = backends[generator]
        # The loss needs the weights: a generator on a model server has none here, so it has no held-out loss.
        weights = getattr(backend, "model", None)
        scores["held_out_loss"] = mean_loss(weights, backend.tokenizer, held_out) if weights is not None else np.nan
    return {
        "label": label, "model": generator, "search": search, "scores": scores,
        "qd_history": [h["qd_score"] for h in state.history], "run_dir": str(state.store.root),
    }


def promote(candidate: dict, champion: dict, margin: float) -> tuple[bool, str]:
    """The candidate replaces the champion only if its QD score is at least the champion's x (1 + margin),
    strictly above it, and its mean quality (over its elites) is not lower."""
    qd_c, qd_ch = candidate["qd_score"], champion["qd_score"]
    q_c, q_ch = candidate["mean_quality"], champion["mean_quality"]
    if not qd_c > qd_ch or qd_c < qd_ch * (1 + margin):
        return False, f"QD score {qd_c:.3f} does not beat the champion's {qd_ch:.3f} by the margin {margin:.0%}"
    if q_c < q_ch:
        return False, f"mean quality {q_c:.3f} is below the champion's {q_ch:.3f}"
    return True, f"QD score {qd_c:.3f} beats {qd_ch:.3f} by more than {margin:.0%}, mean quality {q_c:.3f} >= {q_ch:.3f}"


COMPARED = ["qd_score", "coverage", "num_elites", "mean_quality", "max_quality", "candidate_mean_quality",
            "candidate_diversity", "elite_diversity", "held_out_loss"]


def comparison_table(arms: list[dict]) -> str:
    """A Markdown table: one column per arm, one row per score."""
    rows = [k for k in COMPARED if any(k in a["scores"] for a in arms)]
    header = "| score | " + " | ".join(f"{a['label']} (`{short_name(a['model'])}`, {a['search']})" for a in arms) + " |"
    lines = [header, "|---|" + "---|" * len(arms)]
    for key in rows:
        cells = [f"{a['scores'][key]:.4g}" if key in a["scores"] else "" for a in arms]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def qd_histories(arms: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({a["label"]: a["qd_history"] for a in arms}).rename_axis("generation")
