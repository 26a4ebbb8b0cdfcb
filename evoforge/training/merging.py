"""Merged models, as plain functions (the `merge_models` flow wraps them): two or more LoRA adapters tuned from one
base model (on different niches, runs or data) merged into one adapter, registered like a tuned model, evaluated
against each parent and the champion, and promoted only through the evaluation's gate.

parents (registered models, run artifacts, checkpoint folders) -> one base, their adapters -> merge (models.merge)
-> checkpoint folder -> MLflow model + registry version -> evaluation (merged vs champion, each parent beside) -> gate
"""

import json
import math
from pathlib import Path

from evoforge.core.config import MergeConfig, RunConfig
from evoforge.core.tracking import Tracker
from evoforge.training.finetuning import current_champion, evaluate_models

PARENT = "parent_{}"  # each parent's label in the evaluation: metrics eval/parent_0/qd_score, ...
MODELS_FIX = "give two or more models:/NAME/VERSION, runs:/RUN_ID/tuned_generator or checkpoint folders"


class MergeInputError(ValueError):
    """A merge request that cannot be carried out: the message names the field and the fix."""


def parent_adapters(models: list[str], settings: MergeConfig) -> tuple[str, list[Path]]:
    """The base model's name and each parent's adapter folder; one clear error for a model that is missing, not a
    LoRA adapter, or on another base model than the first, and for weights that do not match the models."""
    from models.resolve import BASE_FILE, ModelNotFoundError, resolve_model

    if len(models) < 2:
        raise MergeInputError(f"models: got {len(models)}; {MODELS_FIX}")
    if settings.weights is not None and len(settings.weights) != len(models):
        raise MergeInputError(f"weights: {len(settings.weights)} weights for {len(models)} models; give one weight per "
                              "model, in the same order, or none for equal weights")
    if settings.weights is not None and not any(settings.weights):
        raise MergeInputError("weights: all are zero, which merges to the base model; give non-zero weights")
    bases, adapters = [], []
    for i, name in enumerate(models):
        try:
            local = resolve_model(name)
        except ModelNotFoundError as err:
            raise MergeInputError(f"models[{i}]: {err}") from None
        if local.adapter is None:
            raise MergeInputError(
                f"models[{i}]: '{name}' is not a LoRA adapter (it is a base or fully tuned model); merging combines "
                "adapters: give models tuned with finetune method 'lora'"
            )
        bases.append((json.loads((local.adapter / BASE_FILE).read_text())["base_model"], local.label))
        adapters.append(local.adapter)
    if len({label for _, label in bases}) > 1:
        found = ", ".join(f"models[{i}] on '{name}'" for i, (name, _) in enumerate(bases))
        raise MergeInputError(f"models: the adapters were tuned from different base models ({found}); merge only "
                              "adapters of one base model (fine-tune each from the same --base-model)")
    return bases[0][0], adapters


def merge_parents(models: list[str], settings: MergeConfig, folder: Path, device: str = "auto") -> dict:
    """Merge the parents' adapters into a checkpoint folder like the trainer's. Returns what was made."""
    from models.loading import load_backend
    from models.merge import merge_adapters, save_merged

    base_model, adapters = parent_adapters(models, settings)
    weights = merge_weights(models, settings)
    base = load_backend(base_model, "float32", device)  # merged in float32, as the trainer trains
    model, residual = merge_adapters(base.model, adapters, weights, settings.method, settings.density, settings.seed)
    provenance = {"parents": list(models), "method": settings.method, "weights": weights, "density": settings.density}
    save_merged(model, base.tokenizer, folder, base_model, provenance)
    return {"checkpoint": str(folder), "base_model": base_model, "weights": weights, "residual": residual}


def evaluate_merged(
    config: RunConfig, merged: dict, models: list[str], out: Path, tracker: Tracker | None, version: str | None,
    register_as: str,
) -> dict:
    """The merged model against the champion of `register_as` (the base model until one is promoted), with each
    parent evaluated beside on the same budget, seed and judges; the champion alias moves only through the gate
    (`evaluate_models`' promotion rule, merged vs champion)."""
    champion = current_champion(tracker, register_as, fallback=merged["base_model"]) if tracker else merged["base_model"]
    rivals = [(PARENT.format(i), model) for i, model in enumerate(models)]
    result = evaluate_models(config, merged["checkpoint"], champion, out, tracker, None, version, register_as, rivals)
    scores = {a["label"]: a["scores"] for a in result["arms"]}
    best_parent = max(scores[label]["qd_score"] for label, _ in rivals)
    summary = {"merge/beats_parents": float(scores["candidate"]["qd_score"] > best_parent),
               "merge/qd_gain_over_best_parent": scores["candidate"]["qd_score"] - best_parent}
    if tracker is not None:
        tracker.log_metrics(summary, step=0)
    return {**result, **summary, "champion": champion}


def merge_weights(models: list[str], settings: MergeConfig) -> list[float]:
    """The weights given, or equal weights summing to 1 (the adapters' mean delta)."""
    return list(settings.weights) if settings.weights else [1.0 / len(models)] * len(models)


def merge_params(models: list[str], settings: MergeConfig) -> dict[str, str]:
    """The merge's MLflow params: parents, method, weights (the ones used), density, seed."""
    weights = merge_weights(models, settings)
    return {"parents": json.dumps(list(models)), "method": settings.method, "weights": json.dumps(weights),
            "density": str(settings.density), "merge_seed": str(settings.seed)}


def register_merged(merged: dict, tracker: Tracker, register_as: str) -> tuple[str, str | None]:
    """Log the merged checkpoint as a pyfunc model of the run and register it as a new version of `register_as`, as
    a tuned model is; log what re-factoring the merged delta into an adapter lost (`merge/residual`: 0 for linear,
    not measurable for DARE's random drops). Returns (model URI, version)."""
    from models.mlflow_model import log_generator

    if not math.isnan(merged["residual"]):
        tracker.log_metrics({"merge/residual": merged["residual"]}, step=0)
    return log_generator(tracker.uri, tracker.run_id, merged["checkpoint"], register_as)
