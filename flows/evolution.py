"""The evolution run as a Prefect DAG.

dataset prep -> (generation: generate -> judge -> update archive) x N -> [finetune -> evaluate]

An island run (islands > 1): dataset prep -> (island generation: evolve every island at once on a Dask cluster
-> gather [migrate, union] -> record) x N -> [finetune -> evaluate]

One population with judge_shards > 1: as the first, with judge -> (judge-shard per shard, at once on a Dask
cluster -> concatenated in order)

Annotations here stay real (no postponed-annotations import): Prefect builds the UI's parameter form from them.
"""

import functools
import time
from contextlib import contextmanager

import pandas as pd

from prefect import flow, get_run_logger
from prefect.states import Completed
from prefect.tasks import exponential_backoff
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evoforge.core.budget import exhausted as budget_exhausted
from evoforge.core.config import IngestConfig, RunConfig, judge_models
from evoforge.judges.panel import Panel
from evoforge.search.arrangements import arrangement_metrics
from evoforge.steps.agents import agent_metrics, credit_manager, steered
from evoforge.steps.arrangements import cull_experts
from evoforge.steps.evolution import (RunState, contiguous_shards, join_expert, judge_step, judged_texts,
                                      open_tracking, with_scores)
from evoforge.steps.islands import first_cid, island_generation_metrics
from evoforge.steps.run_metrics import generation_metrics
from evoforge.steps.run_report import summary_markdown, top_elites
from evoforge.steps.screening import keep_screened, screen_metrics, screened_batch
from flows.engine import dask_task_runner
from flows.finetune import evaluate, finetune
from flows.links import prefect_run_tags
from models.embedder import load_embedder
from models.loading import backend_stats, load_backend
from tasks.evolution import (
    check_elites_heldout,
    evolve_island,
    finish_run,
    fit_heldout_judge,
    fit_judges,
    gather_islands,
    generate_candidates,
    judge_candidates,
    judge_shard,
    prep_dataset,
    record_generation,
    record_islands,
    update_archive,
)
from tasks.agents import steer_generation
from tasks.screening import fit_value_model, screen_candidates


def calling_models(task, config: RunConfig):
    """A task that calls models, retried with backoff and stopped after the configured timeout. Each such step is
    deterministic (a generation's steps are seeded by it; fitting judges scores fixed references) and changes
    no state until it returns, so a transient backend error or a hung call costs a retry, not the night's run."""
    return task.with_options(retries=config.task_retries, retry_delay_seconds=exponential_backoff(backoff_factor=2),
                             timeout_seconds=config.task_timeout_s)


# The state is a live in-process object (archive, experts, models): it is passed by reference, not validated.
@flow(name="generation", flow_run_name="generation-{number}", validate_parameters=False)
def generation(state: RunState, number: int, panel: Panel, backends: dict, tracker, heldout: Panel | None = None) -> dict:
    return generation_steps(state, number, panel, backends, tracker, heldout)


def generation_steps(state: RunState, number: int, panel: Panel, backends: dict, tracker, heldout: Panel | None = None,
                     judge=None) -> dict:
    """One population's generation: generate, judge, archive, record. `judge(panel, candidates, backends)` judges
    the candidates; default: the `judge-candidates` task in this process."""
    judge = judge or calling_models(judge_candidates, state.config)
    started = time.perf_counter()
    embedder = load_embedder(device=state.config.device)
    value = fit_value_model(state, number, embedder) if state.config.screen else None  # screening: off by default
    steering = steer_generation(state, number, embedder) if steered(state.config) else None  # strategy, manager
    candidates = calling_models(generate_candidates, state.config)(state, number, backends,
                                                                   screened_batch(state.config, value), steering)
    if value is not None:
        candidates, held_back = screen_candidates(state, candidates, value, number, embedder)
    generated = time.perf_counter()
    judged = judge(panel, candidates, backends)
    judged_at = time.perf_counter()
    before = state.archive.quality_grid() if steering is not None else None  # the manager credits improvement
    outcome = update_archive(state, judged, number)
    if steering is not None:
        outcome = credit_manager(outcome, before, state.archive)
    if value is not None:
        outcome = keep_screened(outcome, held_back)
    if state.config.arrangements.evolve:  # the weakest experts make way for children of the best
        outcome = cull_experts(state, outcome, number)
    archived = time.perf_counter()
    metrics = generation_metrics(state, outcome, embedder=embedder)
    if state.config.arrangements.evolve:
        metrics.update(arrangement_metrics(outcome.experts, outcome.culled))
    if value is not None:
        metrics.update(screen_metrics(value, outcome))
    if steering is not None:
        metrics.update({**steering.metrics, **agent_metrics(outcome, steering, state.domain.grid_shape)})
    if heldout is not None:
        metrics.update(calling_models(check_elites_heldout, state.config)(state, heldout, backends))
    metrics.update(
        seconds_generate=generated - started, seconds_judge=judged_at - generated, seconds_archive=archived - judged_at,
        seconds_total=time.perf_counter() - started,
    )
    record_generation(state, number, outcome, metrics, tracker)
    get_run_logger().info(
        "generation %d: QD score %.3f, coverage %.1f%%, %d inserted of %d",
        number, metrics["qd_score"], 100 * metrics["coverage"], metrics["inserted"], metrics["candidates"],
    )
    return metrics


def island_generation(state: RunState, number: int, panel: Panel, backends: dict, tracker, heldout: Panel | None,
                      runner) -> dict:
    """One generation of every island: each island's generation is a task on the Dask task runner, and the flow
    gathers them (migration when due, the union archive) and commits them together. Not a subflow: a task carries
    its flow's parameters to the worker, and this generation's would be the run's state and models (see
    flows.engine); its tasks show under the run's flow run."""
    started = time.perf_counter()
    evolve = calling_models(evolve_island, state.config)
    futures = [runner.submit(evolve, dict(island=island, config=state.config, domain=state.domain, panel=panel,
                                          generation=number, first_cid=first_cid(state, island)))
               for island in state.islands]
    gathered = gather_islands(state, [future.result() for future in futures], number)
    evolved = time.perf_counter()
    metrics = island_generation_metrics(state, gathered, embedder=load_embedder(device=state.config.device))
    if heldout is not None:
        metrics.update(calling_models(check_elites_heldout, state.config)(state, heldout, backends))
    metrics.update(seconds_islands=evolved - started, seconds_total=time.perf_counter() - started)
    record_islands(state, number, gathered, metrics, tracker)
    get_run_logger().info(
        "generation %d: QD score %.3f, coverage %.1f%% over %d islands, %d inserted of %d, %d migrants",
        number, metrics["qd_score"], 100 * metrics["coverage"], len(state.islands), metrics["inserted"],
        metrics["candidates"], metrics["migrations"],
    )
    return metrics


def judge_in_shards(panel: Panel, candidates, backends: dict, runner, config: RunConfig):
    """Judge a generation's valid candidates in `config.judge_shards` contiguous shards, each a `judge-shard` task
    on the Dask task runner, and join their score frames in order: what `judge_step` gives in one process (up to
    float rounding: each shard is its own batch). Only the texts and the fitted panel travel with a task."""
    texts = judged_texts(candidates)
    if not texts:  # nothing to score: no task to send
        return judge_step(panel, candidates, backends)
    task = calling_models(judge_shard, config)
    futures = [runner.submit(task, dict(panel=panel, texts=shard, precision=config.precision, device=config.device))
               for shard in contiguous_shards(texts, config.judge_shards)]
    return with_scores(panel, candidates, pd.concat([f.result() for f in futures], ignore_index=True))


@contextmanager
def generation_engine(state: RunState):
    """The flow that runs one generation: `generation` in this process for one population; for an island run,
    `island_generation` with its tasks on a Dask cluster that lives for the whole run (flows.engine); for one
    population with judge_shards > 1, the generation's steps with its judging on such a cluster. Then the steps
    run in the run's flow, not in a `generation` subflow: a task carries its flow's parameters to the worker, and
    the subflow's are the run's state and models."""
    config = state.config
    if config.islands == 1 and config.judge_shards == 1:
        yield generation
        return
    if config.islands > 1:
        with dask_task_runner(config, state.model_names) as runner:
            yield functools.partial(island_generation, runner=runner)
        return
    with dask_task_runner(config, sorted(judge_models(config.judges))) as runner:
        yield functools.partial(generation_steps, judge=functools.partial(judge_in_shards, runner=runner,
                                                                           config=config))


def finetune_due(config: RunConfig, number: int) -> bool:
    """Whether a mid-run fine-tune (`finetune.every`) follows generation `number`; after the last one the final
    fine-tune runs instead."""
    ft = config.finetune
    return bool(ft.enabled and ft.every and (number + 1) % ft.every == 0 and number + 1 < config.generations)


def finetune_at_boundary(state: RunState, tracker, backends: dict, number: int) -> None:
    """The fine-tune due after generation `number`, then (`join_population`) the tuned model's expert. Each is done
    once per boundary: the finetune flow records its outcome in the run folder when it has registered the model,
    and `join_expert` records the expert, so a run killed anywhere in between redoes on resume exactly what was not
    recorded (a kill mid-training: the fine-tune and the join; after it: the join only; after the join: nothing)."""
    tuned = state.store.read_finetune(f"g{number:04d}") or finetune(state, tracker, tag=f"g{number:04d}")
    checkpoint = tuned.get("checkpoint")
    if state.config.finetune.join_population and checkpoint and checkpoint not in {e.backend for e in state.experts}:
        backends[checkpoint] = load_backend(checkpoint, state.config.precision, state.config.device)
        join_expert(state, checkpoint)


def publish_summary(state: RunState, summary: dict) -> None:
    """Prefect artifacts on the flow run's page: the summary (linking the MLflow run) and the top elites."""
    elites = top_elites(state)
    create_markdown_artifact(key="evolution-summary", markdown=summary_markdown(state, summary, elites),
                             description=f"QD score {summary['qd_score']:.3f}, coverage {summary['coverage']:.1%}")
    if elites:
        create_table_artifact(key="top-elites", table=elites, description="The best elite per niche, best first")


@flow(name="evolution_run", log_prints=True)
def evolution_run(config: RunConfig = RunConfig()) -> dict:
    """Evolve a quality-diversity archive of texts for a domain with a population of LLM experts.

    Args:
        config: The run's settings; a run with an existing run_name resumes after its last completed generation
    """
    logger = get_run_logger()
    state = prep_dataset(config)
    tracker = open_tracking(state, tags=prefect_run_tags())
    with tracker.failing_on_error():
        backends = {name: load_backend(name, config.precision, config.device) for name in state.model_names}
        panel = calling_models(fit_judges, config)(state, backends, tracker)
        heldout = calling_models(fit_heldout_judge, config)(state, backends) if config.heldout_judge else None
        if state.completed:
            logger.info("resuming %s after generation %d", state.run_name, state.completed - 1)
        stopped_by = None
        with generation_engine(state) as run_generation:
            if state.completed and finetune_due(config, state.completed - 1):  # a kill may have cut it short
                finetune_at_boundary(state, tracker, backends, state.completed - 1)
            for number in range(state.completed, config.generations):
                stopped_by = budget_exhausted(config.budget, state.history)
                if stopped_by:  # at a generation boundary: everything so far is committed, a larger budget resumes
                    logger.warning("run %s stopped by its budget before generation %d: %s", state.run_name, number,
                                   stopped_by)
                    tracker.set_tags({"stopped_by": stopped_by})
                    break
                run_generation(state, number, panel, backends, tracker, heldout)
                if finetune_due(config, number):
                    finetune_at_boundary(state, tracker, backends, number)
        if config.finetune.enabled and not stopped_by:
            tuned = finetune(state, tracker, tag="final")
            if "checkpoint" in tuned:
                evaluate(state, tracker, tuned)
        tracker.log_metrics(backend_stats(backends), step=state.completed)
        summary = finish_run(state, tracker)
    publish_summary(state, summary)
    if config.knowledge_base:  # each night's elites become knowledge (a subflow: its own run and report)
        from flows.ingest import ingest

        summary["knowledge_base"] = ingest(IngestConfig(path=str(state.store.root), kb=config.knowledge_base))
    logger.info("run %s: QD score %.3f, coverage %.1f%%", summary["run_name"], summary["qd_score"], 100 * summary["coverage"])
    if stopped_by:
        summary["stopped_by"] = stopped_by
        return Completed(message=f"stopped by budget {stopped_by} after {state.completed} of {config.generations} "
                                 "generations; run again with a larger budget to resume", data=summary)
    return summary
