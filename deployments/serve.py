"""Serve evoforge's flows from this machine: no work pool, no worker; this process runs the flow runs.

    python -m deployments.serve [--cron "0 2 * * *"] [--timezone Europe/Berlin] [--parameters '{"config": {...}}']

`evoforge ui` starts it beside the Prefect and MLflow servers. With a work pool instead, see
`deployments/prefect.yaml`.

SIGINT (Ctrl-C) or SIGTERM stops it within seconds even with flow runs in flight: each such run is cancelled (its
process gets SIGTERM, its state becomes Cancelled, "Runner is shutting down."), keeps what it committed, and an
evolution run resumes after its last completed generation when started again with the same run_name.
"""

import argparse
import asyncio
import json
import signal

from prefect.runner import Runner
from prefect.schedules import Cron

from flows.agents import EXAMPLE_TEST, compare_agent, train_agent_run, train_world_model
from flows.evolution import evolution_run
from flows.finetune import evaluate_model, finetune_model, rl_finetune
from flows.ingest import EXAMPLE as INGEST_EXAMPLE, ingest
from flows.merge import merge_models
from flows.tournament import EXAMPLE, moe_tournament

NIGHTLY_CRON = "0 2 * * *"
TIMEZONE = "UTC"


def deployments(cron: str = NIGHTLY_CRON, timezone: str = TIMEZONE, parameters: dict | None = None) -> list:
    """The deployments: a nightly evolution run, and on-demand tournament, finetune, evaluate, merge, ingest and agent flows. Each runs
    at most one at a time (the models are large next to 2 cores)."""
    return [
        evolution_run.to_deployment(
            name="nightly", schedules=[Cron(cron, timezone=timezone)] if cron else None, concurrency_limit=1,
            parameters=parameters or {}, tags=["evoforge", "nightly"],
            description="Nightly evolution run of the default domain on the embedded models.",
        ),
        moe_tournament.to_deployment(
            name="ask", concurrency_limit=1, parameters={"config": EXAMPLE.model_dump(mode="json")},
            tags=["evoforge"], description="Answer one task with the best of many experts.",
        ),
        finetune_model.to_deployment(name="finetune", concurrency_limit=1, tags=["evoforge"]),
        rl_finetune.to_deployment(
            name="rl", concurrency_limit=1, tags=["evoforge"],
            description="RL from judge reward: tune the generator (LoRA) for quality in the niches it is asked for; "
            "register it (evaluate decides promotion).",
        ),
        evaluate_model.to_deployment(name="evaluate", concurrency_limit=1, tags=["evoforge"]),
        merge_models.to_deployment(
            name="merge", concurrency_limit=1, tags=["evoforge"],
            description="Merge tuned LoRA adapters into one model; evaluate it against each parent and the champion; "
            "promote it only through the gate (the run form asks for the models).",
        ),
        train_world_model.to_deployment(
            name="train-world", concurrency_limit=1, tags=["evoforge"],
            description="Fit the value model on run folders; log it to MLflow and register it.",
        ),
        train_agent_run.to_deployment(
            name="train-agent", concurrency_limit=1, tags=["evoforge"],
            description="An evolution run whose manager picks (strategy, expert) per target niche.",
        ),
        compare_agent.to_deployment(
            name="test-agent", concurrency_limit=1, parameters={"config": EXAMPLE_TEST.model_dump(mode="json")},
            tags=["evoforge"], description="A trained agent against plain sampling at equal judge calls.",
        ),
        ingest.to_deployment(
            name="ingest", concurrency_limit=1, parameters={"config": INGEST_EXAMPLE.model_dump(mode="json")},
            tags=["evoforge"], description="Add documents, a run's elites or ask answers to a knowledge base.",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default=NIGHTLY_CRON, help=f"schedule of the nightly run (default: {NIGHTLY_CRON}; '' for none)")
    parser.add_argument("--timezone", default=TIMEZONE, help=f"time zone of the schedule (default: {TIMEZONE})")
    parser.add_argument("--parameters", default="{}", help="JSON default parameters of the nightly run")
    args = parser.parse_args(argv)
    served = deployments(args.cron, args.timezone, json.loads(args.parameters))
    # As prefect.serve does, but serve() leaves flow runs in flight as they are when the runner stops: on SIGINT the
    # runner exited within seconds and left its run Running; Prefect's own SIGTERM handler calls stop() from inside
    # the event loop, where it returns an un-awaited coroutine.
    runner = Runner(pause_on_shutdown=True)
    for deployment in served:
        runner.add_deployment(deployment)
    print(f"serving {', '.join(f'{d.flow_name}/{d.name}' for d in served)}; Ctrl-C or SIGTERM stops", flush=True)
    asyncio.run(serve_until_signalled(runner))


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def serve_until_signalled(runner: Runner) -> None:
    """Run the runner until SIGINT or SIGTERM, then cancel its in-flight flow runs and let it shut down."""
    loop = asyncio.get_running_loop()
    serving = asyncio.create_task(runner.start())
    # runner.start() installs Prefect's SIGTERM handler in its first step, before its first await: let it run that
    # far, then replace it. These handlers also override a SIGINT ignored by whoever started this process.
    await asyncio.sleep(0)
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        stopping.cancel()
        return serving.result()
    if runner.started:
        # Cancels every in-flight flow run (SIGTERM to its process, SIGKILL after Prefect's 30 s grace, then state
        # Cancelled) and stops polling; runner.start() then pauses the schedules and returns.
        await runner.astop()
        await serving
    else:  # still connecting: no flow run can be in flight yet
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


if __name__ == "__main__":
    main()
