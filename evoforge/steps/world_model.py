"""The value model trained across runs ("world model", `evoforge train-world`): fitted on every judged candidate of
one or more run folders, each featurised in its own generation's context (evoforge.steps.screening.training_set),
and saved as a .joblib file that a run's `value_model` setting loads (tot, mcts and the manager value texts with
it from the first generation, instead of waiting for the run's own rows).

Runs of different domains share only the judges' quality as a target; the model predicts the targets every given
run has (quality, and the measures when the runs share a domain's axes).
"""

import json
from pathlib import Path

import numpy as np

from evoforge.core.domain import load_domain
from evoforge.core.store import RunStore
from evoforge.steps.screening import TrainingSet, embedding_memo, training_set
from models.value_model import ValueModel


def run_training_set(run_dir: str | Path, embedder) -> TrainingSet:
    """Every judged candidate of the run folder `run_dir`, featurised."""
    root = Path(run_dir)
    config = root / "config.json"
    if not config.is_file() or not (root / "candidates").is_dir():
        raise ValueError(f"runs: {root} is not a run folder (no config.json and candidates/); pass folders that "
                         "`evoforge run` wrote")
    domain = load_domain(json.loads(config.read_text())["domain"])
    store = RunStore(root)
    generations = len(list((root / "candidates").glob("gen_*.parquet")))
    return training_set(store, generations, domain.axis_names, embedding_memo(embedder))


def fit_world_model(run_dirs: list[str | Path], embedder, seed: int = 0) -> ValueModel:
    """One value model on the judged candidates of all `run_dirs` (held-out error in its `heldout`)."""
    if not run_dirs:
        raise ValueError("runs: expected at least one run folder")
    sets = [run_training_set(d, embedder) for d in run_dirs]
    sets = [s for s in sets if len(s.x)]
    if not sets:
        raise ValueError(f"runs: no judged candidates in {', '.join(map(str, run_dirs))}")
    shared = [t for t in sets[0].targets if all(t in s.targets for s in sets)]
    model = ValueModel().fit(np.vstack([s.x for s in sets]),
                             {t: np.concatenate([s.targets[t] for s in sets]) for t in shared},
                             np.concatenate([s.inserted for s in sets]), seed=seed)
    return model


def save_world_model(model: ValueModel, path: str | Path) -> Path:
    import joblib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return path
