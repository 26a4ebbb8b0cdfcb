"""The steps of an evolution run as plain functions over a `RunState`; Prefect tasks wrap them one to one.

prepare_run -> fit_run_panel -> (generate_step -> judge_step -> archive_step -> commit_generation) x N
    -> write_run_outputs (evoforge.steps.run_report); each generation's metrics: evoforge.steps.run_metrics

Randomness is drawn from `default_rng([seed, generation])`, so a generation does the same thing whether the run
went straight through or resumed just before it.
"""

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from evoforge.core.archive import STATUS_NAMES, PerElite, QDArchive
from evoforge.core.budget import SPENT_BY
from evoforge.core.config import RunConfig, flat_params, judge_models
from evoforge.core.domain import Domain, load_domain
from evoforge.core.experts import Expert, exploration_rate, pick_experts, random_experts, update_value
from evoforge.core.store import RunStore, write_parquet
from evoforge.core.tracking import Tracker
from evoforge.search.arrangements import next_expert_id
from evoforge.judges.panel import Panel, domain_columns, fit_panel, questions
from evoforge.judges.weak_labels import pole_references
from evoforge.knowledge.base import open_base
from evoforge.knowledge.examples import niche_examples
from evoforge.search.control import Controller
from evoforge.search.generation import plan_candidates, write_candidates
from models.backend import Backend


class ResumeError(ValueError):
    """An existing run folder whose configuration does not match the one asked for."""


@dataclass(eq=False)
class RunState:
    """Everything a run holds between generations. It lives in the flow's process; the run folder is its
    durable copy (see `evoforge.core.store`).

    The steps read it and return what they made; `commit_generation` alone applies a generation's results (the
    archive is the one object a step changes in place: `archive_step` inserts into it, as pyribs' `add` does)."""

    config: RunConfig
    domain: Domain
    store: RunStore
    run_name: str
    archive: QDArchive
    experts: list[Expert] = field(default_factory=list)
    pool: list[str] = field(default_factory=list)  # the texts mutation draws few-shot items from
    next_cid: int = 0
    completed: int = 0  # generations committed to the run folder
    logged: int = 0  # generations logged to MLflow (behind `completed` only after a crash between the two)
    history: list[dict] = field(default_factory=list)  # headline metrics per generation
    mlflow_run_id: str | None = None
    embeddings: PerElite = field(default_factory=PerElite)  # for the diversity statistic (run_metrics)
    heldout: PerElite = field(default_factory=PerElite)  # the held-out judge's bins per elite (run_metrics)
    # An island run's populations (evoforge.steps.islands.Island); empty for a one-population run. With islands,
    # `archive` is their union, `experts` all islands' experts and `pool` every text any island's archive took.
    islands: list = field(default_factory=list)

    def __repr__(self) -> str:
        return f"RunState({self.run_name!r}, completed={self.completed}, elites={len(self.archive)})"

    @property
    def model_names(self) -> list[str]:
        """Every backend the run needs: the experts' (tuned models may have joined) and the judges'; with evolving
        arrangements every generator model too (a child may swap to one no living expert uses)."""
        evolving = set(self.config.generator_models) if self.config.arrangements.evolve else set()
        return sorted({e.backend for e in self.experts} | evolving | judge_models(self.config.judges))


def default_run_name(config: RunConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{Path(config.domain).stem}-s{config.seed}-{stamp}"


def generation_rng(config: RunConfig, generation: int, island: int | None = None) -> np.random.Generator:
    """A generation's random stream; each island of an island run has its own."""
    return np.random.default_rng([config.seed, generation] if island is None else [config.seed, generation, island])


# --- dataset prep ----------------------------------------------------------------------------------------------


def prepare_run(config: RunConfig) -> RunState:
    """Load the domain and its seed pool, write them as Parquet, and make the first experts; or, when the run
    folder already holds committed generations, restore the state after the last of them."""
    domain = load_domain(config.domain)
    run_name = config.run_name or default_run_name(config)
    store = RunStore(Path(config.out) / run_name)
    seed_pool = domain.load_pool()
    if config.seed_kb:  # a person's documents seed the domain (the same base gives the same pool on a resume)
        seed_pool += niche_examples(open_base(config.seed_kb), domain, config.seed_kb_per_niche)
    saved = store.read_state()
    if saved is None:
        store.write_prep(config.model_dump(mode="json"), domain.model_dump(mode="json"), seed_pool)
        saved = {"completed": 0, "logged": 0, "next_cid": 0, "mlflow_run_id": None, "history": []}
        store.write_state(saved)
    else:
        _check_resumable(store, config)
    completed, bins = saved["completed"], [a.bins for a in domain.axes]
    if completed == 0:
        rng = np.random.default_rng([config.seed, 2**31])  # a stream of its own, apart from the generations'
        archive, pool = QDArchive(domain.axis_names, bins), list(seed_pool)
        experts = random_experts(
            config.experts, config.generator_models, config.sampling_ranges(), domain.generator.system_prompts,
            seed_pool, rng, shots=config.shots,
        )
    else:
        archive = QDArchive.from_elites(domain.axis_names, bins, store.read_elites(completed - 1))
        experts = [Expert.from_row(row) for row in store.read_experts(completed - 1).to_dict("records")]
        inserted = store.read_candidates(completed, columns=["text", "inserted"])
        pool = list(seed_pool) + inserted.loc[inserted["inserted"], "text"].tolist()
    return RunState(config, domain, store, run_name, archive, experts, pool, next_cid=saved["next_cid"],
                    completed=completed, logged=saved.get("logged", completed), history=saved["history"],
                    mlflow_run_id=saved["mlflow_run_id"])


def _check_resumable(store: RunStore, config: RunConfig) -> None:
    """A run resumes only with the configuration it started with; only `generations` may change (to extend it)."""
    before = json.loads((store.root / "config.json").read_text())
    now = config.model_dump(mode="json")
    # They do not change what was already done (a larger budget or more generations extend the run).
    # Nor does where an island run's tasks compute (a local cluster's size, or another cluster's address).
    # Nor does judge_shards, where a generation is judged (batches differ, so scores may differ in float rounding).
    may_change = {"generations", "run_name", "finetune", "evaluate", "budget", "task_retries", "task_timeout_s",
                  "workers", "cluster", "judge_shards"}
    # A setting added since the run started counts as unchanged when the new value is its default.
    differing = sorted(k for k in now if k not in may_change and before.get(k, _default(k)) != now[k])
    if differing:
        raise ResumeError(
            f"run folder {store.root} already holds a run with other settings ({', '.join(differing)}); "
            "pass the same settings to resume it, or another --run-name / --out to start a new run"
        )


def _default(field: str):
    default = RunConfig.model_fields[field].get_default(call_default_factory=True)
    return default.model_dump(mode="json") if hasattr(default, "model_dump") else default


# --- tracking --------------------------------------------------------------------------------------------------


def open_tracking(state: RunState, tags: dict | None = None) -> Tracker:
    """Start the run's MLflow run, or reopen it when resuming (params are logged once, when it is created)."""
    if state.mlflow_run_id is not None:
        tracker = Tracker(state.config.experiment, state.run_name, run_id=state.mlflow_run_id)
        tracker.set_tags({"resumed_at_generation": state.completed})
        for generation in range(state.logged, state.completed):  # committed, but a crash came before logging
            log_generation(state, generation, state.store.read_metrics(generation), tracker)
        return tracker
    tracker = Tracker(state.config.experiment, state.run_name, tags={"domain": state.domain.name, **(tags or {})})
    from models.devices import resolve_device, resolve_precision

    device = resolve_device(state.config.device)
    tracker.log_params({**flat_params(state.config), "run_dir": str(state.store.root.resolve()),
                        "precision_resolved": resolve_precision(state.config.precision, device),
                        "device_resolved": device})
    state.mlflow_run_id = tracker.run_id
    saved = state.store.read_state()
    state.store.write_state({**saved, "mlflow_run_id": tracker.run_id})
    return tracker


def new_expert(state: RunState, backend: str) -> Expert:
    """A new expert on `backend` (a tuned model), valued like the best expert so the policy tries it soon;
    `join_expert` adds it to the population."""
    config = state.config
    rng = np.random.default_rng([config.seed, 2**31 + len(state.experts)])
    expert = random_experts(
        1, [backend], config.sampling_ranges(), state.domain.generator.system_prompts, state.pool, rng, config.shots
    )[0]
    # A new id (culled experts' ids included: evolving arrangements retires ids), first writing in the next generation.
    return replace(expert, expert_id=next_expert_id(state.store.read_expert_history(), state.experts),
                   value=max(e.value for e in state.experts), born=state.completed)


def join_expert(state: RunState, backend: str) -> Expert:
    """Add a new expert on `backend` (a tuned model's checkpoint folder) to the population, and record it in the run
    folder right away, among the last committed generation's experts: a run killed before its next commit resumes
    with it (resuming loads every expert's backend) instead of losing it and the fine-tuning it cost; the
    boundary's fine-tune, recorded in the run folder before the join, is not done again (flows.evolution)."""
    expert = new_expert(state, backend)
    state.store.add_expert(state.completed - 1, expert.to_row())
    state.experts.append(expert)
    return expert


# --- one generation --------------------------------------------------------------------------------------------


def generate_step(state: RunState, generation: int, backends: dict[str, Backend],
                  batch_size: int | None = None, steering=None) -> pd.DataFrame:
    """The gating policy picks experts; each mutates its genotype and writes its share of the batch
    (`batch_size`, default the config's; screening writes more, see `evoforge.steps.screening`). With
    `steering` (evoforge.steps.agents), a search strategy or the manager writes them."""
    controller = pct_controller(state, generation) if state.config.search == "pct" else None
    return generate_population(state.config, state.domain, state.experts, state.pool, state.archive, generation,
                               backends, state.next_cid, generation_rng(state.config, generation), batch_size,
                               steering, controller)


def pct_controller(state: RunState, generation: int) -> Controller:
    """`search: pct`'s loop state before `generation`, rebuilt from the candidates the run folder holds, so a
    resumed run acts as the uninterrupted one."""
    measures = [f"measure_{a}" for a in state.domain.axis_names]
    record = state.store.read_candidates(generation)
    wanted = ["generation", "text", "valid", "quality", *measures, "pct_target", "pct_aim"]
    return Controller.from_record(state.domain, record[[c for c in wanted if c in record]] if len(record) else None,
                                  state.config.pct_quality, state.config.pct_temperature_gain)


def generate_population(config: RunConfig, domain: Domain, experts: list[Expert], pool: list[str],
                        archive: QDArchive, generation: int, backends: dict[str, Backend], first_cid: int,
                        rng: np.random.Generator, batch_size: int | None = None, steering=None,
                        controller: Controller | None = None) -> pd.DataFrame:
    """`generate_step` for one population (the run's, or one island's); candidates are numbered from `first_cid`.
    `controller`: `search: pct`'s loop state (`pct_controller`)."""
    g = config.gating
    epsilon = exploration_rate(generation, g.epsilon_start, g.epsilon_decay, g.epsilon_min)
    picked = pick_experts(np.array([e.value for e in experts]), g.experts_per_generation, epsilon, rng)
    if steering is not None:
        candidates = steering.write(config, domain, experts, picked, pool, archive.elites(), backends,
                                    batch_size or config.batch_size, rng)
    else:
        plans = plan_candidates(
            experts, picked, batch_size or config.batch_size, domain, pool, archive.elites(), config.near_probability,
            rng, search=config.search, controller=controller,
        )
        candidates = write_candidates(
            backends, plans, domain, config.continue_tokens, seed=int(rng.integers(2**31))
        )
    candidates.insert(0, "cid", np.arange(first_cid, first_cid + len(candidates), dtype=np.int64))
    candidates.insert(1, "generation", generation)
    candidates["epsilon"] = epsilon
    return candidates


# Fitted panels of this process, with the backends they were fitted with (kept alive, so their ids stay unique).
_PANELS: dict[tuple, tuple[Panel, list]] = {}


@dataclass(frozen=True)
class References:
    """The labelled texts a run's judges (and its held-out judge) are calibrated on, and what calibration 'auto'
    means on them: Platt scaling on a domain's own references, anchors on weak ones."""

    texts: pd.DataFrame | None
    auto_calibration: str = "platt"


def run_references(config: RunConfig, domain: Domain, backends: dict[str, Backend]) -> References:
    """The domain's references, or, for a domain without any and `weak_references` > 0, texts the generator
    writes at each axis's poles (`evoforge.judges.weak_labels`; written once per process, domain and models, with
    a fixed seed, so every run of a benchmark is calibrated on the same texts)."""
    if not config.judge_references:
        return References(None)
    references = domain.load_references()
    if references is not None or config.weak_references == 0:
        return References(references)
    generator = backends[config.generator_models[0]]
    key = (domain.model_dump_json(), config.weak_references, config.max_new_tokens, id(generator))
    if key not in _WEAK_REFERENCES:
        _WEAK_REFERENCES[key] = (pole_references(generator, domain, config.weak_references, config.max_new_tokens),
                                 generator)
    return References(_WEAK_REFERENCES[key][0], "anchors")


# Weak references written in this process, with the generator that wrote them (kept alive, so its id stays unique).
_WEAK_REFERENCES: dict[tuple, tuple[pd.DataFrame, Backend]] = {}


def make_panel(config: RunConfig, domain: Domain, backends: dict[str, Backend]) -> Panel:
    """The run's judge panel, with calibration and combination fitted on the run's references (`run_references`).

    Fitting is deterministic (the same models score the same references), so runs in one process that share the
    judges, the domain and the loaded models (a benchmark's many runs) share one fitted panel instead of scoring
    the references again each time; a changed reference file is a different key."""
    references = run_references(config, domain, backends)
    texts = references.texts
    key = (
        json.dumps([j.model_dump() for j in config.judges], sort_keys=True), config.combine,
        domain.model_dump_json(), None if texts is None else pd.util.hash_pandas_object(texts).sum(),
        references.auto_calibration, tuple(sorted((m, id(backends[m])) for m in judge_models(config.judges))),
    )
    if key not in _PANELS:
        panel = fit_panel(backends, config.judges, questions(domain), config.combine, texts, domain_columns(domain),
                          auto_calibration=references.auto_calibration)
        _PANELS[key] = (panel, [backends[m] for m in sorted(judge_models(config.judges))])
    return replace(_PANELS[key][0], guard=config.judge_guards)  # the fitted rules are shared, the switch is the run's


def fit_run_panel(state: RunState, backends: dict[str, Backend]) -> Panel:
    """Fit the panel, measure each judge and combination method on the references, and keep that report as
    `judges.parquet` in the run folder."""
    panel = make_panel(state.config, state.domain, backends)
    if len(panel.report):
        write_parquet(panel.report, state.store.root / "judges.parquet")
    return panel


def judge_step(panel: Panel, candidates: pd.DataFrame, backends: dict[str, Backend]) -> pd.DataFrame:
    """Every judge scores every valid candidate; the panel combines them into quality and measures. A candidate
    that every judge failed to score on some question, or that the guards flag as addressing its judge, is no
    longer valid (it is recorded but not placed)."""
    return with_scores(panel, candidates, panel.judge(backends, judged_texts(candidates)))


def judged_texts(candidates: pd.DataFrame) -> list[str]:
    """The texts the judges score: the valid candidates', in order."""
    return candidates.loc[candidates["valid"], "text"].tolist()


def with_scores(panel: Panel, candidates: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The candidates joined with the panel's scores of `judged_texts(candidates)` (one row per text, in order;
    scored at once or in shards), and no longer valid where a question went unscored or the guards flagged them."""
    valid = candidates.index[candidates["valid"]]
    scores = scores.set_axis(valid)
    judged = candidates.join(scores)
    judged["valid"] = judged["valid"] & judged[list(panel.columns.values())].notna().all(axis=1)
    if "flagged" in judged:
        judged["flagged"] = judged["flagged"].fillna(False).astype(bool)
        judged["guard_flags"] = judged["guard_flags"].fillna("")
        judged["guard_left_out"] = judged["guard_left_out"].fillna("")
        judged["valid"] &= ~judged["flagged"]
    return judged


def contiguous_shards(texts: list[str], shards: int) -> list[list[str]]:
    """`texts` cut into at most `shards` contiguous runs of near-equal length (the first ones one longer), none
    empty, so concatenating them in order gives `texts` back."""
    size, extra = divmod(len(texts), shards)
    bounds = np.cumsum([0] + [size + (k < extra) for k in range(shards)])
    return [texts[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


@dataclass(frozen=True)
class ArchiveOutcome:
    """What one generation's archive update produced: the candidates with their outcome (`status`, `inserted`,
    `reward`) and the experts after the rewards (values, picks and the genotypes that worked)."""

    candidates: pd.DataFrame
    experts: list[Expert]
    culled: list[Expert] = field(default_factory=list)  # culled after the generation (evolving arrangements)

    @property
    def inserted_texts(self) -> list[str]:
        return self.candidates.loc[self.candidates["inserted"], "text"].tolist()


def archive_step(archive: QDArchive, experts: list[Expert], judged: pd.DataFrame, generation: int,
                 config: RunConfig) -> ArchiveOutcome:
    """Insert the valid candidates into `archive` and reward the experts that wrote them."""
    measure_columns = [f"measure_{a}" for a in archive.axis_names]
    status = np.zeros(len(judged), dtype=np.int32)
    valid = judged["valid"].to_numpy()
    if valid.any():
        rows = judged[valid]
        status[valid] = archive.add(
            rows["cid"].to_numpy(), rows["text"].tolist(), rows["quality"].to_numpy(),
            rows[measure_columns].to_numpy(), generation,
        )
    judged = judged.assign(status=[STATUS_NAMES[s] for s in status], inserted=status > 0)
    scheme = config.reward_scheme()
    values = np.array([e.value for e in experts])
    position = {e.expert_id: i for i, e in enumerate(experts)}  # ids and places differ once experts were culled
    rewards, changed = {}, {}
    for expert_id, rows in judged.groupby("expert_id", sort=True):
        i = position[expert_id]
        rewards[expert_id] = scheme.reward(status[rows.index.to_numpy()])
        values = update_value(values, i, rewards[expert_id], config.gating.learning_rate, config.gating.discount)
        best = rows[rows["inserted"]].sort_values("quality", ascending=False)
        genotype = list(best.iloc[0]["genotype"]) if len(best) else experts[i].genotype  # what worked best
        changed[expert_id] = {"picks": experts[i].picks + 1, "genotype": genotype}
    experts = [replace(e, value=float(v), **changed.get(e.expert_id, {})) for e, v in zip(experts, values)]
    return ArchiveOutcome(judged.assign(reward=judged["expert_id"].map(rewards)), experts)


def commit_generation(
    state: RunState, generation: int, outcome: ArchiveOutcome, metrics: dict, tracker: Tracker | None
) -> None:
    """Apply a generation's outcome to the state and commit it to the run folder (Parquet and metrics first,
    state.json last: the commit marker); then log it to MLflow. The run folder is the record: a run killed between
    the two logs the generation when it resumes, instead of redoing it."""
    state.experts = outcome.experts
    state.pool.extend(outcome.inserted_texts)
    candidates = outcome.candidates
    state.next_cid = int(candidates["cid"].max()) + 1 if len(candidates) else state.next_cid
    experts = expert_rows(state, generation, outcome.culled)
    state.store.write_generation(generation, candidates, state.archive.elites(), experts, metrics)
    headline = ("qd_score", "coverage", "max_quality", "mean_quality", "num_elites")
    spending = [k for k in SPENT_BY.values() if k in metrics]  # what the budgets count (evoforge.core.budget)
    state.history.append({"generation": generation, **{k: metrics[k] for k in (*headline, *spending)}})
    state.completed = generation + 1
    _write_state(state)
    if tracker is not None:
        log_generation(state, generation, metrics, tracker)


def expert_rows(state: RunState, generation: int, culled: list[Expert] = ()) -> pd.DataFrame:
    """The experts after `generation`, a row each (an island run's with their island), and the experts culled after
    it, with `culled` = the generation: their last row, so the lineage in experts.parquet is complete."""
    if state.islands:
        return pd.DataFrame([{"generation": generation, "island": island.index, **e.to_row()}
                             for island in state.islands for e in island.experts])
    rows = pd.DataFrame([{"generation": generation, **e.to_row(), "culled": None} for e in state.experts]
                        + [{"generation": generation, **e.to_row(), "culled": generation} for e in culled])
    return rows.astype({"culled": "Int64"})


def log_generation(state: RunState, generation: int, metrics: dict, tracker: Tracker) -> None:
    """A committed generation's metrics in MLflow: its own child run (a half-logged one from before a crash is
    replaced), then the parent run's curves; then state.json records it as logged."""
    child = tracker.child(f"generation-{generation:04d}", tags={"generation": generation})
    child.log_params({"generation": generation})
    child.log_metrics(metrics, step=generation)
    child.finish("FINISHED")
    tracker.log_metrics(metrics, step=generation)  # the parent run holds the curves over generations
    state.logged = generation + 1
    _write_state(state)


def _write_state(state: RunState) -> None:
    state.store.write_state({"completed": state.completed, "logged": state.logged, "next_cid": state.next_cid,
                             "mlflow_run_id": state.mlflow_run_id, "history": state.history})
