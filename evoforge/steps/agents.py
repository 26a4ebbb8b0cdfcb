"""Search agents in a run: a generation written with a search strategy (`RunConfig.strategy`), valued by the
value model, and the manager that picks (strategy, expert) per target niche (evoforge.search.manager).

`steer` prepares what a generation needs (the value model: one trained on earlier runs, `value_model`, else the
run's own refitted on everything judged so far; the manager's bandit, rebuilt from the run's record), and
`Steering.write` writes the generation's candidates with it. Columns it adds to candidates.parquet: `strategy`
(what wrote each candidate; 'sample' where tot or mcts had no value model yet), `strategy_score`, `model_calls`,
`value_pred` (P(enters the archive)) and `value_quality` when a value model exists, and with the manager
`manager_arm` ('<strategy>/<expert id>'), `manager_niche` (the target cell) and `manager_reward` (the archive
improvement, set once the generation is archived).
"""

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from evoforge.core.config import RunConfig
from evoforge.core.experts import exploration_rate
from evoforge.core.store import RunStore
from evoforge.search.generation import plan_candidates
from evoforge.search.manager import NicheBandit, archive_improvement, arms_of, manager_plans
from evoforge.search.router import ROUTER_COLUMNS, Router, router_plans, routing_metrics, run_router
from evoforge.search.tree_writing import NEEDS_VALUES, write_with_strategies
from evoforge.steps.evolution import ArchiveOutcome, RunState
from evoforge.steps.screening import embedding_memo, fit_value
from models.value_model import Context, ValueModel, features

MANAGER_COLUMNS = ["manager_arm", "manager_niche", "manager_reward"]


class TextValues:
    """The value model over texts in the run's context now (its pool and elites): P(enters the archive) per text,
    which is what tot and mcts maximise."""

    def __init__(self, model: ValueModel, pool: list[str], elites: list[str], embedder):
        self.model, self.embed = model, embedding_memo(embedder)
        self.context = Context(pool, elites, self.embed(elites))

    def predict(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.model.predict(features(texts, self.embed(texts), self.context))

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.predict(texts)["p_insert"]


def uses_values(config: RunConfig) -> bool:
    strategies = config.manager.strategies if config.manager.enabled else [config.strategy]
    return any(s in NEEDS_VALUES for s in strategies)


def steered(config: RunConfig) -> bool:
    """Whether a generation is written by `Steering` (else exactly as before: sampled, gating picks experts)."""
    return config.strategy != "sample" or config.manager.enabled or config.gating.policy == "router"


_WORLD_MODELS: dict[str, ValueModel] = {}


def load_world_model(spec: str) -> ValueModel:
    """A value model trained on earlier runs: a .joblib file written by `evoforge train-world`, or
    'models:/<name>/<version>' in the MLflow registry (the version `train-world` registered). Loaded once per
    process."""
    if spec not in _WORLD_MODELS:
        try:
            if spec.startswith("models:/"):
                import mlflow

                model = mlflow.sklearn.load_model(spec)
            else:
                import joblib

                model = joblib.load(spec)
        except Exception as err:  # a missing file, a missing registry version, or a file that is no pickle
            raise ValueError(f"value_model: cannot load {spec!r} ({type(err).__name__}); train one with `evoforge "
                             "train-world`, or leave value_model empty to use the run's own") from None
        if not isinstance(model, ValueModel) or not model.fitted:
            raise ValueError(f"value_model: {spec!r} is not a fitted value model (write one with `evoforge "
                             "train-world`)")
        _WORLD_MODELS[spec] = model
    return _WORLD_MODELS[spec]


@dataclass
class Steering:
    """What a steered generation is written with: the value model over texts (None until one exists), the
    manager's bandit (None without the manager), and the value model's fit metrics."""

    values: TextValues | None = None
    bandit: NicheBandit | None = None
    metrics: dict = field(default_factory=dict)
    router: Router | None = None  # gating.policy 'router' (evoforge.search.router)
    epsilon: float = 0.0  # the router's exploration rate this generation (the gating policy's schedule)

    def strategies(self, config: RunConfig) -> list[str]:
        """The strategies usable now: tot and mcts only once a value model exists."""
        wanted = config.manager.strategies if config.manager.enabled else [config.strategy]
        usable = [s for s in wanted if s not in NEEDS_VALUES or self.values is not None]
        return usable or ["sample"]

    def write(self, config: RunConfig, domain, experts, picked: list[int], pool: list[str], elites: pd.DataFrame,
              backends: dict, batch_size: int, rng: np.random.Generator) -> pd.DataFrame:
        """The generation's candidates (before cids), as `write_candidates` returns them plus the columns named in
        the module's docstring."""
        usable = self.strategies(config)
        extra = {}
        if self.bandit is not None:
            arms = arms_of(usable, experts)
            plans, chosen, niches = manager_plans(self.bandit, arms, experts, batch_size, domain, pool, elites,
                                                  config.shots, rng)
            strategies = [a.strategy for a in chosen]
            extra = {"manager_arm": [a.name for a in chosen], "manager_niche": niches, "manager_reward": np.nan}
        elif self.router is not None:
            plans, extra = router_plans(self.router, experts, batch_size, domain, pool, elites, config.shots,
                                        self.epsilon, rng)
            strategies = [usable[0]] * len(plans)
            extra["router_reward"] = np.nan
        else:
            plans = plan_candidates(experts, picked, batch_size, domain, pool, elites, config.near_probability, rng,
                                    search=config.search)
            strategies = [usable[0]] * len(plans)
        candidates = write_with_strategies(backends, plans, strategies, domain, config.continue_tokens,
                                           int(rng.integers(2**31)), config.tree, self.values)
        candidates = candidates.assign(value_pred=np.nan, value_quality=np.nan, **extra)
        valid = candidates["valid"].to_numpy()
        if self.values is not None and valid.any():
            predicted = self.values.predict(candidates.loc[valid, "text"].tolist())
            candidates.loc[valid, "value_pred"] = predicted["p_insert"]
            candidates.loc[valid, "value_quality"] = predicted["quality"]
        return candidates


def steer(state: RunState, generation: int, embedder) -> Steering:
    """What generation `generation` is steered by (see `Steering`)."""
    config = state.config
    steering = Steering()
    if uses_values(config):
        if config.value_model:
            model = load_world_model(config.value_model)
            steering.metrics["value/world_model_rows"] = float(model.rows)
        else:
            fit = fit_value(state, generation, embedder)
            model, steering.metrics = fit.model, dict(fit.metrics)
        if model is not None:
            steering.values = TextValues(model, state.pool, state.archive.elites()["text"].tolist(), embedder)
    if config.manager.enabled:
        history = manager_history(state.store, generation)
        if config.manager.warm_start:
            history = pd.concat([agent_credit(config.manager.warm_start), history], ignore_index=True)
        # Credit is kept by arm name; the arms are the strategies usable now (tot and mcts need the value model).
        names = [a.name for a in arms_of(steering.strategies(config), state.experts)]
        steering.bandit = NicheBandit.from_history(names, history, config.manager.policy,
                                                   config.manager.exploration)
    if config.gating.policy == "router":
        g = config.gating
        steering.router = run_router(picks_history(state.store, generation, ROUTER_COLUMNS), len(state.experts),
                                     state.domain.grid_shape, g.router_bandwidth)
        steering.epsilon = exploration_rate(generation, g.epsilon_start, g.epsilon_decay, g.epsilon_min)
    return steering


def picks_history(store: RunStore, upto: int, columns: list[str]) -> pd.DataFrame:
    """The `columns` of the picks (rows where the first column is set) of the generations before `upto`."""
    candidates = store.read_candidates(upto) if upto > 0 else pd.DataFrame()
    if columns[0] not in candidates:
        return pd.DataFrame(columns=columns)
    return candidates.loc[candidates[columns[0]].notna(), columns]


def manager_history(store: RunStore, upto: int) -> pd.DataFrame:
    """The manager's picks of the generations before `upto` in a run folder (credited or not)."""
    return picks_history(store, upto, MANAGER_COLUMNS)


def agent_credit(run_dir: str) -> pd.DataFrame:
    """A trained agent's credit: every manager pick of the run folder `run_dir` (a `train-agent` run)."""
    store = RunStore(run_dir)
    state = store.read_state()
    if state is None or not state["completed"]:
        raise ValueError(f"manager.warm_start: {run_dir} holds no completed run; pass a `train-agent` run folder")
    history = manager_history(store, state["completed"])
    if not len(history):
        raise ValueError(f"manager.warm_start: {run_dir} has no manager picks; pass a run made with the manager "
                         "(`evoforge train-agent`)")
    return history


def credit_manager(outcome: ArchiveOutcome, before: np.ndarray, archive) -> ArchiveOutcome:
    """Each manager- or router-written candidate's reward (`manager_reward`, `router_reward`): its archive
    improvement over the grid `before` the generation."""
    candidates = outcome.candidates
    picked = {"manager_arm": "manager_reward", "router_expert": "router_reward"}
    picked = {marker: column for marker, column in picked.items() if marker in candidates}
    if not picked or not len(candidates):
        return outcome
    measures = candidates[[f"measure_{a}" for a in archive.axis_names]].to_numpy(dtype=float)
    cells = archive.cell_index(np.nan_to_num(measures))
    reward = archive_improvement(candidates["quality"].to_numpy(dtype=float), candidates["inserted"].to_numpy(),
                                 cells, before)
    return replace(outcome, candidates=candidates.assign(
        **{column: np.where(candidates[marker].notna(), reward, np.nan) for marker, column in picked.items()}))


def agent_metrics(outcome: ArchiveOutcome, steering: Steering | None = None, shape: tuple[int, ...] = ()
                  ) -> dict[str, float]:
    """Per generation: candidates each strategy wrote and their mean archive improvement (the manager's reward; for
    a run without the manager, the same improvement is not computed) and the model calls they made; with the
    router (`steering`'s, on a grid of `shape`), its routing metrics (`routing_metrics`)."""
    c = outcome.candidates
    metrics = {}
    if steering is not None and steering.router is not None and "router_reward" in c:
        metrics.update(routing_metrics(steering.router, c[ROUTER_COLUMNS], shape))
    for strategy, rows in c.groupby("strategy"):
        metrics[f"strategy/{strategy}/candidates"] = float(len(rows))
        metrics[f"strategy/{strategy}/model_calls"] = float(rows["model_calls"].sum())
        metrics[f"strategy/{strategy}/inserted"] = float(rows["inserted"].sum())
        if "manager_reward" in rows:
            metrics[f"manager/reward/{strategy}"] = float(rows["manager_reward"].mean())
    if "manager_reward" in c:
        metrics["manager/reward"] = float(c["manager_reward"].sum())
        metrics["manager/arms_picked"] = float(c["manager_arm"].nunique())
    return metrics
