"""`evoforge` command line: `evoforge run --domain opinions --generations 8 ...`."""

import argparse
import json
import os
import sys

from pydantic import ValidationError

from evoforge.config import RunConfig

os.environ.setdefault("DO_NOT_TRACK", "true")  # no telemetry from Prefect or MLflow
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# CLI flag -> RunConfig field, for the flags that map one to one.
RUN_FLAGS = {
    "domain": "domain",
    "generations": "generations",
    "experts": "experts",
    "batch_size": "batch_size",
    "max_new_tokens": "max_new_tokens",
    "seed": "seed",
    "out": "out",
    "run_name": "run_name",
    "experiment": "experiment",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evoforge", description="Evolve LLM outputs and LLM experts.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an evolution run (a Prefect flow, tracked in MLflow)")
    fields = RunConfig.model_fields
    for flag, field in RUN_FLAGS.items():
        info = fields[field]
        kind = int if info.annotation is int else str
        help_text = f"{info.description} (default: {info.default})".replace("%", "%%")  # argparse formats help with %
        run.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=None, help=help_text)
    run.add_argument("--config", help="JSON file with RunConfig fields; flags given here override it")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    values = {}
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            values = json.load(fh)
    values.update({field: getattr(args, flag) for flag, field in RUN_FLAGS.items() if getattr(args, flag) is not None})
    return RunConfig.model_validate(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from evoforge.domain import DomainError, load_domain
    from evoforge.run import ResumeError
    from models.resolve import ModelNotFoundError

    try:
        config = run_config(args)
        load_domain(config.domain)  # fail before any server or model starts
    except ValidationError as err:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in err.errors())
        print(f"evoforge: invalid settings: {problems}", file=sys.stderr)
        return 2
    except (DomainError, OSError, json.JSONDecodeError) as err:
        print(f"evoforge: {err}", file=sys.stderr)
        return 2

    from flows.evolution import evolution_run  # imports Prefect and torch: only once the input is known good

    try:
        summary = evolution_run(config)
    except (ModelNotFoundError, ResumeError, DomainError) as err:
        print(f"evoforge: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
