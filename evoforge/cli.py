"""`evoforge` command line.

    evoforge run --domain opinions --generations 8 [--finetune]
    evoforge finetune --data PATH | --run RUN_DIR
    evoforge evaluate --domain opinions --model URI
"""

import argparse
import json
import sys

from pydantic import ValidationError

from evoforge.config import EvaluateConfig, FinetuneConfig, RunConfig

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
    run.add_argument("--finetune", action="store_true", help="finetune on the elites and evaluate after the last generation")
    run.add_argument("--finetune-every", type=int, metavar="K", help="also finetune every K generations")
    run.add_argument("--join-population", action="store_true", help="a tuned model joins the experts as a backend")

    ft = commands.add_parser("finetune", help="finetune a model on a local data set or on a run's elites")
    source = ft.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a local Parquet / JSONL / JSON / CSV / text file, or a folder of them")
    source.add_argument("--run", dest="run_dir", help="a run folder (runs/<name>) whose archive.parquet to train on")
    ft.add_argument("--base-model", default="smollm2", help="model to tune (default: smollm2)")
    ft.add_argument("--text-column", default="text", help="column with the text, for plain-text data (default: text)")
    ft.add_argument("--register-as", help="registered model name (default: evoforge-<domain> or evoforge-custom)")
    ft.add_argument("--method", choices=["lora", "full"], default="lora")
    ft.add_argument("--epochs", type=int, default=3)
    ft.add_argument("--batch-size", type=int, default=4)
    ft.add_argument("--max-length", type=int, default=256)
    ft.add_argument("--learning-rate", type=float, default=3e-4)
    ft.add_argument("--out", default="runs/finetune", help="folder for checkpoints (default: runs/finetune)")

    ev = commands.add_parser("evaluate", help="evaluate a model against the champion on a domain")
    ev.add_argument("--domain", default="opinions")
    ev.add_argument("--model", required=True, help="model to evaluate: a checkpoint folder, models:/NAME/VERSION, ...")
    ev.add_argument("--champion", help="model to beat (default: the registry's champion, else the base model)")
    ev.add_argument("--generations", type=int, default=2)
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--search", choices=["niche", "lmx", "fixed_few_shot", "zero_shot"], default="niche")
    ev.add_argument("--margin", type=float, default=0.02, help="relative QD-score margin needed to promote")
    ev.add_argument("--baselines", nargs="*", choices=["zero_shot", "fixed_few_shot"], default=[])
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default="runs/evaluate")
    return parser


def run_config(args: argparse.Namespace) -> RunConfig:
    values = {}
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            values = json.load(fh)
    values.update({field: getattr(args, flag) for flag, field in RUN_FLAGS.items() if getattr(args, flag) is not None})
    finetune = dict(values.get("finetune", {}))
    if args.finetune or args.finetune_every:
        finetune["enabled"] = True
    if args.finetune_every:
        finetune["every"] = args.finetune_every
    if args.join_population:
        finetune["join_population"] = True
    if finetune:
        values["finetune"] = finetune
    return RunConfig.model_validate(values)


def finetune_request(args: argparse.Namespace) -> dict:
    settings = FinetuneConfig(
        method=args.method, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
        learning_rate=args.learning_rate,
    )
    return dict(data=args.data, run_dir=args.run_dir, base_model=args.base_model, text_column=args.text_column,
                register_as=args.register_as, settings=settings, out=args.out)


def evaluate_request(args: argparse.Namespace) -> dict:
    settings = EvaluateConfig(
        generations=args.generations, batch_size=args.batch_size, search=args.search, margin=args.margin,
        baselines=args.baselines,
    )
    return dict(domain=args.domain, model=args.model, champion=args.champion, settings=settings, seed=args.seed, out=args.out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from evoforge.domain import DomainError, load_domain
    from evoforge.finetuning import DatasetNotFoundError, dataset_files
    from evoforge.run import ResumeError
    from models.resolve import ModelNotFoundError

    try:  # check the input before any server or model starts
        if args.command == "run":
            request = run_config(args)
            load_domain(request.domain)
        elif args.command == "finetune":
            request = finetune_request(args)
            if request["data"] is not None:
                dataset_files(request["data"])
        else:
            request = evaluate_request(args)
            load_domain(request["domain"])
    except ValidationError as err:
        problems = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in err.errors())
        print(f"evoforge: invalid settings: {problems}", file=sys.stderr)
        return 2
    except (DomainError, OSError, json.JSONDecodeError) as err:
        print(f"evoforge: {err}", file=sys.stderr)
        return 2

    # Prefect and torch are imported only once the input is known to be good.
    try:
        if args.command == "run":
            from flows.evolution import evolution_run

            summary = evolution_run(request)
        elif args.command == "finetune":
            from flows.finetune import finetune_model

            summary = finetune_model(**request)
        else:
            from flows.finetune import evaluate_model

            summary = evaluate_model(**request)
    except (ModelNotFoundError, DatasetNotFoundError, ResumeError, DomainError) as err:
        print(f"evoforge: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
