"""Search agents' flows, seed 002's CLI tasks (`train_llm_world`, `train_agent`, `test_agent`):

- `train_world`: the value model fitted on one or more run folders, logged to MLflow with its held-out error and
  registered (a run's `value_model` names the file or the registry version);
- `train_agent`: an evolution run with the manager on (its record is the trained agent: the bandit's credit);
- `test_agent`: the trained agent against plain sampling, two fresh runs per seed with the same judge calls per
  generation, and a table.

Annotations here stay real (no postponed-annotations import): Prefect builds the UI's parameter form from them.
"""

import json
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from evoforge.core.config import AgentTestConfig, ManagerConfig, RunConfig, WorldConfig
from evoforge.core.tracking import Tracker
from flows.evolution import evolution_run
from flows.links import prefect_run_tags


@flow(name="train_world", log_prints=True)
def train_world_model(config: WorldConfig = WorldConfig(runs=["tests/data/opinions-s0-run"])) -> dict:
    """Fit the value model ("world model") on the judged candidates of run folders; log and register it.

    Args:
        config: The run folders to learn from, where the model is written and the name it is registered under
    """
    from evoforge.steps.world_model import fit_world_model, save_world_model
    from models.embedder import load_embedder
    from models.mlflow_model import log_value_model

    model = fit_world_model(config.runs, load_embedder("minilm"), seed=config.seed)
    path = save_world_model(model, config.out)
    tracker = Tracker(config.experiment, f"world-{Path(config.out).stem}", tags=prefect_run_tags())
    with tracker.failing_on_error():
        tracker.log_params({"runs": ",".join(config.runs), "rows": str(model.rows), "out": str(path),
                            "seed": str(config.seed)})
        tracker.log_metrics({f"value/{k}": v for k, v in model.heldout.items()}, step=0)
        tracker.log_artifact(path, "value_model")
        uri, version = log_value_model(tracker.uri, tracker.run_id, model, config.register_as)
        tracker.finish("FINISHED")
    summary = {"path": str(path), "rows": model.rows, "heldout": model.heldout, "model_uri": uri,
               "version": version, "registered_as": config.register_as, "mlflow_run_id": tracker.run_id}
    get_run_logger().info("value model on %d rows: %s; %s%s", model.rows, json.dumps(model.heldout), path,
                          f", registered {config.register_as} v{version}" if version else "")
    return summary


@flow(name="train_agent", log_prints=True)
def train_agent_run(config: RunConfig = RunConfig(manager=ManagerConfig(enabled=True))) -> dict:
    """An evolution run whose manager picks (strategy, expert) per target niche; its run folder is the agent.

    Args:
        config: The run's settings (the manager is switched on whatever manager.enabled says)
    """
    if not config.manager.enabled:
        config = config.model_copy(update={"manager": config.manager.model_copy(update={"enabled": True})})
    return evolution_run(config)


ARMS = ("agent", "sample")


def arm_config(agent: RunConfig, arm: str, agent_dir: str, settings: AgentTestConfig, seed: int) -> RunConfig:
    """One arm of the test: the agent's settings with a fresh run name; the manager warm-started from the agent's
    credit, or off (plain sampling, today's run)."""
    manager = (agent.manager.model_copy(update={"enabled": True, "warm_start": agent_dir}) if arm == "agent"
               else ManagerConfig())
    return agent.model_copy(update={
        "manager": manager, "strategy": "sample", "seed": seed, "generations": settings.generations,
        "out": settings.out, "run_name": f"{Path(agent_dir).name}-{arm}-s{seed}", "finetune":
        agent.finetune.model_copy(update={"enabled": False}), "knowledge_base": None,
    })


def comparison(rows: pd.DataFrame) -> str:
    lines = ["| arm | seed | QD score | coverage | judge calls | tokens | wall s |", "|---|---|---|---|---|---|---|"]
    for r in rows.itertuples():
        lines.append(f"| {r.arm} | {r.seed} | {r.qd_score:.3f} | {r.coverage:.1%} | {r.judge_calls:.0f} | "
                     f"{r.tokens:.0f} | {r.wall_s:.0f} |")
    return "\n".join(lines)


EXAMPLE_TEST = AgentTestConfig(agent="runs/<a train-agent run>")


@flow(name="test_agent", log_prints=True)
def compare_agent(config: AgentTestConfig = EXAMPLE_TEST) -> dict:
    """The trained agent against plain sampling at equal judge calls per generation: QD, coverage, cost.

    Args:
        config: The trained agent's run folder, the generations and seeds of the test runs, where they go
    """
    agent_dir = Path(config.agent)
    if not (agent_dir / "config.json").is_file():
        raise ValueError(f"agent: {agent_dir} is not a run folder (no config.json); pass a `train-agent` run folder")
    agent = RunConfig.model_validate(json.loads((agent_dir / "config.json").read_text()))
    rows = []
    for seed in config.seeds:
        for arm in ARMS:
            summary = evolution_run(arm_config(agent, arm, str(agent_dir), config, seed))
            history = pd.DataFrame(summary_history(summary))
            rows.append({"arm": arm, "seed": seed, "qd_score": summary["qd_score"], "coverage": summary["coverage"],
                         "judge_calls": history["judge_calls"].sum(), "tokens": history["tokens_generated"].sum(),
                         "wall_s": history["seconds_total"].sum(), "run_dir": summary["run_dir"]})
    rows = pd.DataFrame(rows)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(out / "test_agent.parquet", index=False)
    table = comparison(rows)
    (out / "test_agent.md").write_text(table + "\n")
    create_markdown_artifact(key="test-agent", markdown=table, description="trained agent vs plain sampling")
    print(table)
    return {"table": table, "rows": rows.to_dict("records")}


def summary_history(summary: dict) -> list[dict]:
    """The per-generation headline metrics of a finished run (its state.json)."""
    return json.loads((Path(summary["run_dir"]) / "state.json").read_text())["history"]
