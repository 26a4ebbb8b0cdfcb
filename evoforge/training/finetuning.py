"""Finetune and evaluate, as plain functions: the `finetune` and `evaluate` flows wrap them.

finetune: data (archive elites, or a local data set) -> examples -> LoRA/full training -> MLflow model + registry
evaluate: candidate vs champion (and baselines) fill fresh archives -> table, plot -> promotion via registry alias
"""

import copy
import json
from pathlib import Path

import pandas as pd

from evoforge.core import plots
from evoforge.core.archive import QDArchive
from evoforge.core.config import FinetuneConfig, RunConfig, judge_models
from evoforge.core.domain import Domain, load_domain
from evoforge.training.evaluate import comparison_table, fill_archive, promote, qd_histories
from evoforge.training.finetune_data import elite_examples, ever_elites, write_examples
from evoforge.training.replay import DRAW_COLUMN, draw_indices, replay_examples
from evoforge.steps.evolution import make_panel
from evoforge.core.tracking import Tracker

CHAMPION = "champion"
READERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text"}


class DatasetNotFoundError(FileNotFoundError):
    """A data set name that is not a local file or folder (hubs are unreachable)."""


def registered_name(domain: Domain) -> str:
    return f"evoforge-{domain.name}"


# --- data --------------------------------------------------------------------------------------------------------


def dataset_files(name: str) -> tuple[str, list[Path]]:
    """The `datasets` reader and the files of a local data set; a clear error for anything else (a hub name)."""
    path = Path(name).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(
            f"data set '{name}' is not a local file or folder, and data set hubs cannot be reached from here: "
            f"pass a local path to a {', '.join(sorted(READERS))} file, or a folder of them"
        )
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.suffix in READERS)
    kinds = {READERS.get(f.suffix) for f in files}
    if not files or None in kinds or len(kinds) != 1:
        raise DatasetNotFoundError(
            f"{path}: expected files of one kind among {sorted(READERS)}, found {[f.name for f in files][:5]}"
        )
    return kinds.pop(), files


def load_local_dataset(name: str) -> pd.DataFrame:
    """A local Parquet / JSONL / JSON / CSV / text file, or a folder of them, read with `datasets`."""
    import datasets

    reader, files = dataset_files(name)
    return datasets.load_dataset(reader, data_files=[str(f) for f in files], split="train").to_pandas()


def examples_from_frame(tokenizer, frame: pd.DataFrame, text_column: str, max_length: int) -> list:
    """Chat examples from `prompt`/`completion` or `messages` columns, else language modelling on `text_column`."""
    from models.finetune import chat_examples, text_examples

    if {"prompt", "completion"} <= set(frame.columns):
        return chat_examples(tokenizer, frame["prompt"].tolist(), frame["completion"].tolist(), max_length)
    if "messages" in frame.columns:
        pairs = [_user_and_answer(list(m)) for m in frame["messages"]]
        return chat_examples(tokenizer, [p for p, _ in pairs], [a for _, a in pairs], max_length)
    if text_column not in frame.columns:
        raise ValueError(f"data set has no column '{text_column}' (columns: {list(frame.columns)}); pass --text-column")
    return text_examples(tokenizer, frame[text_column].astype(str).tolist(), max_length)


def _user_and_answer(messages: list[dict]) -> tuple[str, str]:
    user = next(m["content"] for m in messages if m["role"] == "user")
    answer = next(m["content"] for m in messages if m["role"] == "assistant")
    return user, answer


def archive_training_data(elites: pd.DataFrame, domain: Domain, folder: Path, tracker: Tracker | None,
                          replay: tuple | None = None) -> pd.DataFrame:
    """Training examples from the elites, written as Parquet and chat JSONL (and logged). `replay`: (the run's
    candidates, its archive, its finetune settings), for prioritized replay's columns (evoforge.training.replay)."""
    examples = elite_examples(elites, domain)
    if replay is not None:
        candidates, archive, settings = replay
        examples = replay_examples(examples, elites, candidates, archive, settings)
    for path in write_examples(examples, folder):
        if tracker is not None:
            tracker.log_artifact(path, "finetune/data")
    return examples


def run_training_frame(run_dir: Path, settings) -> tuple[Domain, pd.DataFrame]:
    """A finished run's fine-tune examples (one per candidate that ever entered its archive, with prioritized
    replay's columns when `settings.replay` asks for them), and its domain."""
    domain = load_domain(json.loads((run_dir / "config.json").read_text())["domain"])
    archive = QDArchive(domain.axis_names, [a.bins for a in domain.axes])  # for its binning
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    elites = ever_elites(candidates, archive)
    return domain, replay_examples(elite_examples(elites, domain), elites, candidates, archive, settings)


def replay_ready(tokenizer, frame: pd.DataFrame, text_column: str, max_length: int) -> tuple[list, object]:
    """`examples_from_frame`, and for a frame with replay draws (prioritized replay) each kept example's draw
    probability (examples that tokenise to nothing are dropped, so the draws are matched row by row); else None."""
    if DRAW_COLUMN not in frame.columns:
        return examples_from_frame(tokenizer, frame, text_column, max_length), None
    per_row = [examples_from_frame(tokenizer, frame.iloc[[i]], text_column, max_length) for i in range(len(frame))]
    kept = [i for i, row in enumerate(per_row) if row]
    return [per_row[i][0] for i in kept], frame[DRAW_COLUMN].to_numpy(dtype=float)[kept]


# --- finetune ----------------------------------------------------------------------------------------------------


def train_and_register(
    frame: pd.DataFrame,
    base_model: str,
    settings: FinetuneConfig,
    out_dir: Path,
    tracker: Tracker | None,
    register_as: str | None,
    text_column: str = "text",
    tag: str = "final",
    device: str = "auto",
) -> dict:
    """Train on `frame` (on `device`); log losses, checkpoints and the model; register it. Returns what happened."""
    from models.finetune import mean_loss, split_held_out, train
    from models.mlflow_model import log_generator
    from models.resolve import resolve_model
    from models.loading import load_backend

    if settings.method == "full" and resolve_model(base_model).gguf_file:
        raise ValueError(
            f"finetune.method='full' cannot train '{base_model}': transformers keeps GGUF weights packed and cannot "
            "save them. Use method='lora' (the default), or a local Hugging Face model folder as the base model."
        )
    base = load_backend(base_model, "float32", device)  # AdamW on bfloat16 weights loses small updates: train in float32
    examples, draw = replay_ready(base.tokenizer, frame, text_column, settings.max_length)
    if len(examples) < settings.min_examples:
        return {"skipped": f"{len(examples)} examples, fewer than finetune.min_examples={settings.min_examples}"}
    train_rows, held_rows = split_held_out(list(range(len(examples))), settings.eval_fraction, settings.seed)
    if draw is not None:  # prioritized replay: the training split is drawn by priority (evoforge.training.replay)
        train_rows = [train_rows[j] for j in draw_indices(draw[train_rows], len(train_rows), settings.seed)]
    train_set, held_out = [examples[i] for i in train_rows], [examples[i] for i in held_rows]
    loss_before = mean_loss(base.model, base.tokenizer, held_out)
    # Train a copy: LoRA and full training both change the model, and the shared backend must stay the base.
    model = copy.deepcopy(base.model)

    def on_epoch(record):
        if tracker is not None:
            tracker.log_metrics(
                {f"finetune/{tag}/train_loss": record["train_loss"], f"finetune/{tag}/eval_loss": record["eval_loss"],
                 f"finetune/{tag}/learning_rate": record["learning_rate"]},
                step=record["epoch"],
            )

    _, result = train(model, base.tokenizer, train_set, held_out, settings, Path(out_dir), base_model, on_epoch)
    outcome = {
        "checkpoint": str(result.best_checkpoint),
        "examples": len(examples),
        "held_out": held_out,
        "held_out_loss_before": loss_before,
        "held_out_loss": result.best_eval_loss,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "model_uri": None,
        "version": None,
    }
    if tracker is not None:
        for epoch_dir in sorted(Path(out_dir).glob("epoch_*")):
            tracker.log_artifacts(epoch_dir, f"finetune/{tag}/checkpoints/{epoch_dir.name}")
        tracker.log_metrics({f"finetune/{tag}/held_out_loss_before": loss_before}, step=0)
        outcome["model_uri"], outcome["version"] = log_generator(tracker.uri, tracker.run_id, result.best_checkpoint, register_as)
    return outcome


# --- evaluate ----------------------------------------------------------------------------------------------------


def current_champion(tracker: Tracker, name: str, fallback: str) -> str:
    """The registry's champion of `name` as a model URI, or `fallback` (the base model) when there is none."""
    try:
        tracker.client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no registered model, or no champion alias yet
        return fallback
    return f"models:/{name}@{CHAMPION}"


def evaluate_models(
    config: RunConfig,
    candidate: str,
    champion: str,
    out: Path,
    tracker: Tracker | None,
    held_out: list | None = None,
    candidate_version: str | None = None,
    register_as: str | None = None,
    rivals: list[tuple[str, str]] = (),
) -> dict:
    """Candidate vs champion (+ `rivals`, (label, model) pairs shown beside, e.g. a merged model's parents, + baselines)
    on one budget; logs the table and plot; moves the champion alias to `candidate_version` of `register_as` if the
    promotion rule (candidate vs champion) says so."""
    from models.embedder import load_embedder
    from models.loading import load_backend

    e = config.evaluate
    base = config.generator_models[0]
    plan = [("candidate", candidate, e.search), ("champion", champion, e.search)]
    plan += [(label, model, e.search) for label, model in rivals]
    plan += [(name, base, name) for name in e.baselines]  # each baseline is the base model under that search
    backends = {m: load_backend(m, config.precision, config.device) for m in judge_models(config.judges)}
    panel = make_panel(config, load_domain(config.domain), backends)  # one fitted panel judges every arm
    arms = []
    for label, model, search in plan:
        backends.setdefault(model, load_backend(model, config.precision, config.device))
        arms.append(fill_archive(config, model, search, label, out, backends, load_embedder(device=config.device), held_out,
                                 panel))
    promoted, reason = promote(arms[0]["scores"], arms[1]["scores"], e.margin)
    table = comparison_table(arms)
    report = f"# Evaluation\n\n{table}\n\n**Promotion:** {'yes' if promoted else 'no'}: {reason}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.md").write_text(report)
    histories = qd_histories(arms)
    plot = plots.qd_comparison(histories, out / "evaluation_qd.png")
    registered = promoted and candidate_version is not None and register_as is not None
    if tracker is not None:
        metrics = {f"eval/{a['label']}/{k}": v for a in arms for k, v in a["scores"].items()}
        tracker.log_metrics({**metrics, "eval/promoted": float(promoted)}, step=0)
        tracker.set_tags({"eval/promotion": reason, "eval/candidate": candidate, "eval/champion": champion})
        tracker.log_artifact(out / "evaluation.md", "evaluation")
        tracker.log_artifact(plot, "evaluation")
        if registered:
            tracker.client.set_registered_model_alias(register_as, CHAMPION, candidate_version)
    return {"promoted": promoted, "alias_moved": registered, "reason": reason, "table": table, "arms": arms}
