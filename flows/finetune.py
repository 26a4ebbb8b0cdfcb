"""The `finetune` and `evaluate` subflows: close the generate -> evaluate -> finetune loop.

Annotations here stay real (no postponed-annotations import): Prefect reads them for parameter forms.
"""

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from evoforge.training import finetuning
from evoforge.core.config import EvaluateConfig, FinetuneConfig, RLConfig, RunConfig, flat_params
from evoforge.core.domain import load_domain
from evoforge.training.finetune_data import ever_elites
from evoforge.training.rl import train_rl
from evoforge.steps.evolution import RunState
from evoforge.core.tracking import Tracker
from models.resolve import short_name


@task(name="build-finetune-data", cache_policy=NO_CACHE)
def build_finetune_data(state: RunState, folder: Path, tracker):
    candidates = state.store.read_candidates(state.completed)
    elites = ever_elites(candidates, state.archive)
    return finetuning.archive_training_data(elites, state.domain, folder, tracker,
                                            replay=(candidates, state.archive, state.config.finetune))


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(frame, base_model: str, config: RunConfig, out_dir: Path, tracker, register_as: str, tag: str):
    return finetuning.train_and_register(frame, base_model, config.finetune, out_dir, tracker, register_as, tag=tag,
                                          device=config.device)


@task(name="evaluate-models", cache_policy=NO_CACHE)
def evaluate_models(config: RunConfig, candidate: str, champion: str, out: Path, tracker, held_out, version, register_as):
    return finetuning.evaluate_models(config, candidate, champion, out, tracker, held_out, version, register_as)


@flow(name="finetune", flow_run_name="finetune-{tag}", validate_parameters=False)
def finetune(state: RunState, tracker, tag: str = "final") -> dict:
    """Train the generator on the archive's elites; log and register the tuned model."""
    folder = state.store.root / "finetune" / tag
    frame = build_finetune_data(state, folder, tracker)
    base = state.config.generator_models[0]
    outcome = train_model(frame, base, state.config, folder / "checkpoints", tracker, finetuning.registered_name(state.domain), tag)
    # Recorded once trained and registered (the held-out examples are the final evaluation's, in memory only).
    state.store.write_finetune(tag, {k: v for k, v in outcome.items() if k != "held_out"})
    get_run_logger().info(
        "finetune %s: %s", tag,
        outcome.get("skipped") or f"held-out loss {outcome['held_out_loss_before']:.3f} -> {outcome['held_out_loss']:.3f}",
    )
    return outcome


@flow(name="evaluate", validate_parameters=False)
def evaluate(state: RunState, tracker, tuned: dict) -> dict:
    """The tuned model against the registry's champion (the base model until one is promoted)."""
    name = finetuning.registered_name(state.domain)
    champion = finetuning.current_champion(tracker, name, fallback=state.config.generator_models[0])
    result = evaluate_models(
        state.config, tuned["checkpoint"], champion, state.store.root / "evaluation", tracker,
        tuned["held_out"], tuned["version"], name,
    )
    get_run_logger().info("evaluation: promoted=%s (%s)\n%s", result["promoted"], result["reason"], result["table"])
    return result


# --- the same stages on their own (CLI: evoforge finetune / evoforge evaluate) -----------------------------------


@flow(name="finetune_model", log_prints=True)
def finetune_model(
    data: str | None = None,
    run_dir: str | None = None,
    base_model: str = "smollm2",
    text_column: str = "text",
    register_as: str | None = None,
    settings: FinetuneConfig = FinetuneConfig(),
    out: str = "runs/finetune",
    experiment: str = "evoforge",
) -> dict:
    """Finetune `base_model` on a local data set (`data`) or on the elites of a finished run (`run_dir`).

    Args:
        data: A local Parquet / JSONL / JSON / CSV / text file or folder to train on (or give run_dir)
        run_dir: A finished run's folder (runs/<name>) whose elites to train on (or give data)
        base_model: The model to tune: an embedded name (smollm2), a .gguf path or a local folder
        text_column: Column with the text, for plain-text data sets
        register_as: Registered model name in MLflow (default: evoforge-<domain>, or evoforge-custom)
        settings: Trainer settings (LoRA or full, epochs, batch size, learning rate, ...)
        out: Folder for checkpoints
        experiment: MLflow experiment name
    """
    if (data is None) == (run_dir is None):
        raise ValueError("pass exactly one of data (a local data set) or run_dir (a run folder with archive.parquet)")
    if run_dir is not None:
        domain, frame = finetuning.run_training_frame(Path(run_dir), settings)
        register_as = register_as or finetuning.registered_name(domain)
        name = f"finetune-{Path(run_dir).name}"
    else:
        frame = finetuning.load_local_dataset(data)
        register_as = register_as or "evoforge-custom"
        name = f"finetune-{Path(data).stem}"
    tracker = Tracker(experiment, name, tags={"stage": "finetune"})
    tracker.log_params({"data": str(data or run_dir), "base_model": base_model, "text_column": text_column,
                        "register_as": register_as, **flat_params(settings, prefix="finetune.")})
    with tracker.failing_on_error():
        outcome = finetuning.train_and_register(frame, base_model, settings, Path(out) / name, tracker, register_as,
                                                text_column)
    tracker.finish("FINISHED")
    outcome.pop("held_out", None)
    return {**outcome, "mlflow_run_id": tracker.run_id}


@flow(name="rl_finetune", log_prints=True)
def rl_finetune(
    domain: str = "opinions",
    base_model: str = "smollm2",
    settings: RLConfig = RLConfig(),
    register_as: str | None = None,
    out: str = "runs/rl",
    experiment: str = "evoforge",
    run_settings: dict | None = None,
) -> dict:
    """RL from judge reward: tune `base_model` (LoRA) to write, for a random niche, a text the judges score high and
    place in that niche; log each step's reward and KL; register the adapter. `evoforge evaluate` then compares it
    with the champion, and only that gate promotes it.

    Args:
        domain: A shipped domain (opinions, stories, jaws) or a path to a domain YAML
        base_model: The model to tune: an embedded name (smollm2), a .gguf path or a local folder
        settings: Steps, prompts and samples per step, reward and KL weights, LoRA settings
        register_as: Registered model name in MLflow (default: evoforge-<domain>)
        out: Folder for the adapter
        experiment: MLflow experiment name
        run_settings: Further RunConfig fields for the judges (judges, combine, precision, device)
    """
    judging = RunConfig(domain=domain, experiment=experiment, **(run_settings or {}))
    loaded = load_domain(domain)
    register_as = register_as or finetuning.registered_name(loaded)
    tracker = Tracker(experiment, f"rl-{loaded.name}", tags={"stage": "rl"})
    tracker.log_params({"domain": domain, "base_model": base_model, "register_as": register_as,
                        **flat_params(settings, prefix="rl.")})
    with tracker.failing_on_error():
        outcome = train_rl(loaded, base_model, settings, judging, Path(out) / tracker.run_id, tracker, register_as,
                           judging.device)
    tracker.finish("FINISHED")
    first, last = outcome["history"][0]["reward"], outcome["history"][-1]["reward"]
    print(f"rl: mean reward {first:.3f} (first step) -> {last:.3f} (last); adapter {outcome['checkpoint']}")
    return {k: outcome[k] for k in ("checkpoint", "model_uri", "version")} | {"mlflow_run_id": tracker.run_id}


@flow(name="evaluate_model", log_prints=True)
def evaluate_model(
    domain: str = "opinions",
    model: str = "smollm2",
    champion: str | None = None,
    settings: EvaluateConfig = EvaluateConfig(),
    seed: int = 0,
    out: str = "runs/evaluate",
    experiment: str = "evoforge",
    run_settings: dict | None = None,
) -> dict:
    """`model` against `champion` (default: the registry's champion for the domain, else the base model).
    If `model` is a registered version (`models:/NAME/VERSION`) and wins, the champion alias moves to it.

    Args:
        domain: A shipped domain (opinions, stories) or a path to a domain YAML
        model: The model to evaluate: a checkpoint folder, models:/NAME/VERSION, or an embedded name
        champion: The model to beat (default: the registry's champion, else the base model)
        settings: Budget, prompting, promotion margin and baselines of the evaluation
        seed: Random seed shared by every evaluated model
        out: Folder for the evaluation's run folders and report
        experiment: MLflow experiment name
        run_settings: Further RunConfig fields of the arms' runs, e.g. `judges` on a model server
    """
    config = RunConfig(domain=domain, seed=seed, evaluate=settings, experiment=experiment, **(run_settings or {}))
    name = finetuning.registered_name(load_domain(domain))
    tracker = Tracker(experiment, f"evaluate-{short_name(model)}", tags={"stage": "evaluate"})
    tracker.log_params({"domain": domain, "model": model, "seed": seed, **flat_params(settings, prefix="evaluate.")})
    champion = champion or finetuning.current_champion(tracker, name, fallback=config.generator_models[0])
    registered, version = registered_version(model)
    folder = Path(out) / tracker.run_id
    with tracker.failing_on_error():
        result = finetuning.evaluate_models(
            config, model, champion, folder, tracker, None, version if registered == name else None, name
        )
    tracker.finish("FINISHED")
    print(result["table"])
    return {k: result[k] for k in ("promoted", "alias_moved", "reason", "table")} | {"mlflow_run_id": tracker.run_id}


def registered_version(uri: str) -> tuple[str | None, str | None]:
    """('evoforge-opinions', '3') for 'models:/evoforge-opinions/3'; (None, None) for anything else."""
    parts = uri.removeprefix("models:/").split("/") if uri.startswith("models:/") else []
    return (parts[0], parts[1]) if len(parts) == 2 and parts[1].isdigit() else (None, None)
