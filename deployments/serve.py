"""Serve evoforge's flows from this machine: no work pool, no worker; this process runs the flow runs.

    python -m deployments.serve [--cron "0 2 * * *"] [--timezone Europe/Berlin] [--parameters '{"config": {...}}']

`evoforge ui` starts it beside the Prefect and MLflow servers. With a work pool instead, see
`deployments/prefect.yaml`.
"""

import argparse
import json

from prefect import serve
from prefect.schedules import Cron

from flows.evolution import evolution_run
from flows.finetune import evaluate_model, finetune_model
from flows.tournament import EXAMPLE, moe_tournament

NIGHTLY_CRON = "0 2 * * *"
TIMEZONE = "UTC"


def deployments(cron: str = NIGHTLY_CRON, timezone: str = TIMEZONE, parameters: dict | None = None) -> list:
    """The deployments: a nightly evolution run, and on-demand tournament, finetune and evaluate flows. Each runs
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
        evaluate_model.to_deployment(name="evaluate", concurrency_limit=1, tags=["evoforge"]),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default=NIGHTLY_CRON, help=f"schedule of the nightly run (default: {NIGHTLY_CRON}; '' for none)")
    parser.add_argument("--timezone", default=TIMEZONE, help=f"time zone of the schedule (default: {TIMEZONE})")
    parser.add_argument("--parameters", default="{}", help="JSON default parameters of the nightly run")
    args = parser.parse_args(argv)
    serve(*deployments(args.cron, args.timezone, json.loads(args.parameters)), print_starting_message=True)


if __name__ == "__main__":
    main()
