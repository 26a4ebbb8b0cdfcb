"""The `merge_models` flow (CLI: evoforge merge --models URI URI ...): merge tuned LoRA adapters into one model,
register it, evaluate it against each parent and the champion, and promote it only through the evaluation's gate.

Annotations here stay real (no postponed-annotations import): Prefect reads them for the run form.
"""

from pathlib import Path

from prefect import flow

from evoforge.core.config import EvaluateConfig, MergeConfig, RunConfig, flat_params
from evoforge.core.domain import load_domain
from evoforge.core.tracking import Tracker
from evoforge.training import merging
from evoforge.training.finetuning import registered_name
from tasks.merge import evaluate_merged, merge_adapters, register_merged


@flow(name="merge_models", log_prints=True)
def merge_models(
    models: list[str],
    settings: MergeConfig = MergeConfig(),
    domain: str = "opinions",
    evaluation: EvaluateConfig = EvaluateConfig(),
    register_as: str | None = None,
    seed: int = 0,
    device: str = "auto",
    out: str = "runs/merge",
    experiment: str = "evoforge",
) -> dict:
    """Merge two or more LoRA adapters tuned from one base model; evaluate the merged model against each parent
    and the champion; move the champion alias to it only if the promotion rule says so.

    Args:
        models: The models to merge, two or more: models:/NAME/VERSION, runs:/RUN_ID/tuned_generator or checkpoint folders
        settings: Merge method (linear, ties, dare_ties, dare_linear), one weight per model, density, seed
        domain: A shipped domain (opinions, stories) or a path to a domain YAML, for the evaluation
        evaluation: Budget, prompting and promotion margin of the evaluation
        register_as: Registered model name for the merged model (default: evoforge-<domain>)
        seed: Random seed shared by every evaluated model
        device: Where the models compute: auto, cpu, cuda, cuda:N
        out: Folder for the merged checkpoint and the evaluation's run folders and report
        experiment: MLflow experiment name
    """
    merging.parent_adapters(models, settings)  # bad input is one clear error before anything is made or logged
    config = RunConfig(domain=domain, seed=seed, evaluate=evaluation, experiment=experiment, device=device)
    register_as = register_as or registered_name(load_domain(domain))
    tracker = Tracker(experiment, f"merge-{settings.method}-{len(models)}", tags={"stage": "merge"})
    tracker.log_params({**merging.merge_params(models, settings), "domain": domain, "seed": seed,
                        "register_as": register_as, **flat_params(evaluation, prefix="evaluate.")})
    folder = Path(out) / tracker.run_id
    with tracker.failing_on_error():
        merged = merge_adapters(models, settings, folder / "merged", device)
        config = config.model_copy(update={"generator_models": [merged["base_model"]]})  # baselines use the base
        model_uri, version = register_merged(merged, tracker, register_as)
        result = evaluate_merged(config, merged, models, folder / "evaluation", tracker, version, register_as)
    tracker.finish("FINISHED")
    print(result["table"])
    print(f"promotion: {'yes' if result['promoted'] else 'no'}: {result['reason']}")
    keys = ("promoted", "alias_moved", "reason", "table", "champion", "merge/beats_parents")
    return {k: result[k] for k in keys} | {"model_uri": model_uri, "version": version, "mlflow_run_id": tracker.run_id,
                                           "checkpoint": merged["checkpoint"], "residual": merged["residual"]}
