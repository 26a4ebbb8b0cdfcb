"""`evoforge` command line.

    evoforge run --domain opinions --generations 8 [--finetune]
    evoforge train-world --runs RUN_DIR [RUN_DIR ...]   |   train-agent [run flags]   |   test-agent --agent RUN_DIR
    evoforge finetune --data PATH | --run RUN_DIR [--replay prioritized]
    evoforge rl --domain opinions [--steps 24]
    evoforge evaluate --domain opinions --model URI
    evoforge merge --models URI URI ... [--method ties --weights 0.6 0.4]
    evoforge ask "INSTRUCTION" --context TEXT [--reward R | --reward-file F]
    evoforge judges --domain opinions [--calibration platt]
    evoforge score --domain opinions --input texts.txt --output scores.csv
    evoforge ui [--cron "0 2 * * *" --timezone Europe/Berlin]
    evoforge kb add PATH | search QUERY | stats | export --out FILE   [--kb NAME]
    evoforge chat [--kb NAME]
"""

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from evoforge.core.budget import BudgetConfig
from evoforge.core.config import (AgentTestConfig, EvaluateConfig, FinetuneConfig, IngestConfig, MergeConfig, RLConfig, RunConfig,
                                   TournamentConfig, WorldConfig)

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
    "device": "device",
    "screen": "screen",
    "strategy": "strategy",
    "value_model": "value_model",
    "islands": "islands",
    "migration_interval": "migration_interval",
    "migration_topology": "migration_topology",
    "migrants": "migrants",
    "workers": "workers",
    "cluster": "cluster",
    "judge_shards": "judge_shards",
}


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The flags of `run` (and `train-agent`): RunConfig's one-to-one fields, --config, fine-tuning and budgets."""
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
    for field, info in BudgetConfig.model_fields.items():  # budget.max_tokens -> --max-tokens, ...
        kind = int if "int" in str(info.annotation) else float
        run.add_argument(f"--{field.replace('_', '-')}", dest=f"budget_{field}", type=kind, default=None,
                         help=f"budget: {info.description}; the run stops before the next generation once it is spent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evoforge", description="Evolve LLM outputs and LLM experts.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an evolution run (a Prefect flow, tracked in MLflow)")
    add_run_arguments(run)
    agent = commands.add_parser("train-agent", help="an evolution run whose manager picks (strategy, expert) per "
                                "target niche (a bandit); its run folder is the trained agent")
    add_run_arguments(agent)
    agent.add_argument("--strategies", nargs="+", choices=["sample", "beam", "tot", "mcts"],
                       help="strategies the manager chooses among (default: sample tot)")
    agent.add_argument("--policy", choices=["ucb1", "thompson"], help="the manager's bandit (default: ucb1)")
    world = commands.add_parser("train-world", help="fit the value model on run folders, log it to MLflow and "
                                "register it (a run's value_model can name it)")
    for field, info in WorldConfig.model_fields.items():
        nargs = "+" if field == "runs" else None
        default = "" if info.is_required() else f" (default: {info.default})"
        world.add_argument(f"--{field.replace('_', '-')}", dest=f"world_{field}", nargs=nargs, metavar=field.upper(),
                           type=int if info.annotation is int else str, required=info.is_required(),
                           help=f"{info.description}{default}".replace("%", "%%"))
    test = commands.add_parser("test-agent", help="a trained agent (a train-agent run) against plain sampling at "
                               "equal judge calls per generation: two fresh runs per seed and a table")
    test.add_argument("--agent", required=True, help=AgentTestConfig.model_fields["agent"].description)
    test.add_argument("--generations", type=int, help="generations of each run (default: 4)")
    test.add_argument("--seeds", type=int, nargs="+", help="seeds; each runs both arms (default: 0)")
    test.add_argument("--out", help="folder for the runs and the table (default: runs/test-agent)")

    ft = commands.add_parser("finetune", help="finetune a model on a local data set or on a run's elites")
    source = ft.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a local Parquet / JSONL / JSON / CSV / text file, or a folder of them")
    source.add_argument("--run", dest="run_dir", help="a run folder (runs/<name>) whose archive.parquet to train on")
    ft.add_argument("--base-model", default="smollm2", help="model to tune (default: smollm2)")
    ft.add_argument("--text-column", default="text", help="column with the text, for plain-text data (default: text)")
    ft.add_argument("--register-as", help="registered model name (default: evoforge-<domain> or evoforge-custom)")
    ft.add_argument("--method", choices=["lora", "full"], default="lora")
    ft.add_argument("--epochs", type=int, default=3)
    ft.add_argument("--train-batch-size", "--batch-size", dest="train_batch_size", type=int, default=4,
                    help="examples per training step (--batch-size is its old name)")
    ft.add_argument("--max-length", type=int, default=256)
    ft.add_argument("--learning-rate", type=float, default=3e-4)
    ft.add_argument("--out", default="runs/finetune", help="folder for checkpoints (default: runs/finetune)")
    ft.add_argument("--replay", choices=["uniform", "prioritized"], default="uniform",
                    help="with --run: draw the elites uniformly, or by priority (see --replay-priority)")
    ft.add_argument("--replay-priority", choices=["quality", "advantage"], default="quality",
                    help="prioritized replay's priority: an elite's quality, or its quality over its cell's mean")

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
    ev.add_argument("--config", help="JSON file with RunConfig fields for the judges and the arms' runs (judges, "
                    "combine, precision, device, ...), e.g. server judges; domain, seed and evaluate come from flags")

    rl = commands.add_parser("rl", help="RL from judge reward: tune the generator (LoRA) to write high-quality texts "
                             "in the niches it is asked for; register it (evaluate decides promotion)")
    rl.add_argument("--domain", default="opinions")
    rl.add_argument("--base-model", default="smollm2", help="model to tune (default: smollm2)")
    rfields = RLConfig.model_fields
    for name in ("steps", "prompts_per_step", "group", "max_new_tokens", "learning_rate", "kl", "miss_weight", "seed"):
        rl.add_argument(f"--{name.replace('_', '-')}", dest=f"rl_{name}", type=type(rfields[name].default),
                        help=f"{rfields[name].description} (default: {rfields[name].default})")
    rl.add_argument("--register-as", help="registered model name (default: evoforge-<domain>)")
    rl.add_argument("--out", default="runs/rl", help="folder for the adapter (default: runs/rl)")
    rl.add_argument("--config", help="JSON file with RunConfig fields for the judges (judges, combine, precision, "
                    "device)")

    mg = commands.add_parser("merge", help="merge tuned LoRA adapters into one model, evaluate it against each parent "
                             "and the champion, promote it only through the gate")
    mg.add_argument("--models", nargs="+", required=True, metavar="URI",
                    help="two or more: models:/NAME/VERSION, runs:/RUN_ID/tuned_generator or checkpoint folders")
    mfields = MergeConfig.model_fields
    mg.add_argument("--method", choices=["linear", "ties", "dare_ties", "dare_linear"], default="linear",
                    help=mfields["method"].description)
    mg.add_argument("--weights", nargs="+", type=float, help=mfields["weights"].description)
    mg.add_argument("--density", type=float, default=0.5, help=mfields["density"].description)
    mg.add_argument("--merge-seed", type=int, default=0, help=mfields["seed"].description)
    mg.add_argument("--register-as", help="registered model name (default: evoforge-<domain>)")
    mg.add_argument("--domain", default="opinions", help="domain of the evaluation")
    for flag, field in (("generations", "generations"), ("batch-size", "batch_size")):
        mg.add_argument(f"--{flag}", type=int, default=EvaluateConfig.model_fields[field].default,
                        help=f"evaluation: {EvaluateConfig.model_fields[field].description}")
    mg.add_argument("--search", choices=["niche", "lmx", "fixed_few_shot", "zero_shot"], default="niche")
    mg.add_argument("--margin", type=float, default=0.02, help="relative QD-score margin needed to promote")
    mg.add_argument("--seed", type=int, default=0, help="random seed shared by every evaluated model")
    mg.add_argument("--device", default="auto", help="where the models compute: auto, cpu, cuda, cuda:N")
    mg.add_argument("--out", default="runs/merge")

    ask = commands.add_parser("ask", help="answer one task with the best of many experts (a tournament)")
    ask.add_argument("instruction", help="the task, e.g. 'Evaluate the investment viability of ...'")
    tfields = TournamentConfig.model_fields
    for flag, field, kind in ASK_FLAGS:
        ask.add_argument(f"--{flag}", dest=field, type=kind, default=None,
                         help=f"{tfields[field].description} (default: {tfields[field].default})".replace("%", "%%"))
    ask.add_argument("--config", help="JSON file with TournamentConfig fields; flags given here override it")

    chat = commands.add_parser("chat", help="a conversation with the experts in this terminal (optionally from a "
                               "knowledge base); /reward R rates the last answer; quit or Ctrl-D leaves")
    for flag, field, kind in ASK_FLAGS:
        if field not in ("context", "min_iterations", "max_iterations", "reward_threshold", "external_reward",
                         "external_reward_file", "wait_for_reward_s"):  # one answer per turn, rewards typed
            chat.add_argument(f"--{flag}", dest=field, type=kind, default=None,
                              help=f"{tfields[field].description} (default: {tfields[field].default})".replace("%", "%%"))
    chat.add_argument("--config", help="JSON file with TournamentConfig fields; flags given here override it")

    sc = commands.add_parser("score", help="score texts with a run's judges and guards (check a judge before a run)")
    sc.add_argument("--domain", default="opinions", help="domain whose questions and references the judges use")
    sc.add_argument("--input", required=True, help="a .txt file (one text a line) or a .csv file with a text column")
    sc.add_argument("--output", required=True, help="CSV file to write the scores to")
    sc.add_argument("--config", help="JSON file with RunConfig fields (judges, combine, judge_guards, precision)")

    jd = commands.add_parser("judges", help="measure the judges on a domain's reference labels")
    jd.add_argument("--domain", default="opinions")
    jd.add_argument("--calibration", choices=["auto", "none", "contextual", "platt", "isotonic", "anchors"], default="none")
    jd.add_argument("--kind", choices=["logprob", "generative", "label"], default="logprob")
    jd.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto")
    jd.add_argument("--device", default="auto", help="where the judges compute: auto, cpu, cuda, cuda:N")

    kb = commands.add_parser("kb", help="a knowledge base: add sources, search it, its statistics, export records")
    actions = kb.add_subparsers(dest="kb_command", required=True)
    kb_flag = dict(default="default", help="knowledge base: a name (.state/kb/<name>) or a folder path (default: default)")
    add = actions.add_parser("add", help="add documents, a run's elites or ask answers (runs the ingest flow)")
    add.add_argument("path", help=IngestConfig.model_fields["path"].description)
    add.add_argument("--kb", **kb_flag)
    add.add_argument("--chunk-words", type=int, default=IngestConfig.model_fields["chunk_words"].default)
    add.add_argument("--overlap-words", type=int, default=IngestConfig.model_fields["overlap_words"].default)
    search = actions.add_parser("search", help="the passages most similar to a query")
    search.add_argument("query")
    search.add_argument("--kb", **kb_flag)
    search.add_argument("-k", type=int, default=5, help="passages to show (default: 5)")
    for name in ("kind", "source", "domain", "run", "niche"):
        search.add_argument(f"--{name}", help=f"only chunks whose {name} is this" +
                            (" (a path prefix)" if name == "source" else "") +
                            (": document, elite or answer" if name == "kind" else ""))
    stats = actions.add_parser("stats", help="chunks, sources and cache of a knowledge base")
    stats.add_argument("--kb", **kb_flag)
    export = actions.add_parser("export", help="query / sources / answer / reward records of ask and chat runs as JSONL")
    export.add_argument("--out", required=True, help="the JSONL file to write")
    export.add_argument("--runs", default="runs", help="folder holding the ask and chat runs (default: runs)")
    export.add_argument("--rated-only", action="store_true", help="only records with a reward")

    ui = commands.add_parser("ui", help="start the Prefect and MLflow servers and the deployment runner")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.add_argument("--state", default=".state", help="folder for the Prefect database and the logs (default: .state)")
    ui.add_argument("--cron", default="0 2 * * *", help="schedule of the nightly evolution run ('' for none)")
    ui.add_argument("--timezone", default="UTC", help="time zone of the schedule, e.g. Europe/Berlin (default: UTC)")
    ui.add_argument("--parameters", default="{}", help="JSON default parameters of the nightly run, e.g. "
                    "'{\"config\": {\"generations\": 20}}'")
    return parser


# `evoforge ask` flag, TournamentConfig field, type.
ASK_FLAGS = [
    ("context", "context", str), ("experts", "experts", int), ("answering", "answering", int),
    ("population", "population", str), ("population-file", "population_file", str),
    ("min-iterations", "min_iterations", int), ("max-iterations", "max_iterations", int),
    ("reward-threshold", "reward_threshold", float), ("reward", "external_reward", float),
    ("reward-file", "external_reward_file", str), ("wait-for-reward", "wait_for_reward_s", int),
    ("max-new-tokens", "max_new_tokens", int), ("seed", "seed", int), ("out", "out", str),
    ("run-name", "run_name", str), ("selection", "selection", str), ("value-signal", "value_signal", str),
    ("device", "device", str), ("kb", "kb", str), ("kb-k", "kb_k", int), ("kb-context-chars", "kb_context_chars", int),
    ("layers", "layers", int), ("layer-context-chars", "layer_context_chars", int), ("strategy", "strategy", str),
    ("ensemble", "ensemble", str), ("routing", "routing", str),
]


def read_config_file(path: str | None, model: type) -> dict:
    """The fields a `--config` JSON file sets ({} without one), refused unless the file holds a JSON object."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        values = json.load(fh)
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a JSON object of {model.__name__} fields, e.g. "
                         f'{{"generations": 4}}, got a {type(values).__name__}')
    return values


def tournament_config(args: argparse.Namespace) -> TournamentConfig:
    values = read_config_file(args.config, TournamentConfig)
    values["instruction"] = getattr(args, "instruction", "chat")  # a chat's instruction is each message
    values.update({field: getattr(args, field) for _, field, _ in ASK_FLAGS if getattr(args, field, None) is not None})
    return TournamentConfig.model_validate(values)


def print_answer(summary: dict) -> None:
    print(f"Task: {summary['task']}\n")
    print(f"Answer (expert {summary['expert_id']}, rated '{summary['reward_label']}', reward {summary['reward']:.2f}):")
    print(f"{summary['answer']}\n")
    print("Scores: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["scores"].items()))
    print("Expert values: " + ", ".join(f"{k}: {v:+.3f}" for k, v in summary["values"].items()))
    print(f"Iterations: {summary['iterations']}, total reward {summary['total_reward']:.2f}")
    if summary.get("sources"):
        from evoforge.knowledge.records import sources_markdown

        print("Sources:\n" + sources_markdown(summary["sources"]))
    print(f"Saved: {summary['run_dir']} (answers, experts), population {summary['population_file']}")


def judges_report(args: argparse.Namespace) -> str:
    """Each judge, raw and calibrated, and each combination method, on the domain's reference labels."""
    from evoforge.core.config import default_judges
    from evoforge.core.domain import load_domain
    from evoforge.judges.panel import fit_panel, questions
    from models.loading import load_backend

    domain = load_domain(args.domain)
    references = domain.load_references()
    if references is None:
        raise ValueError(f"domain '{domain.name}' has no reference labels: add `references:` to its YAML file")
    judges = [j.model_copy(update={"calibration": args.calibration, "kind": args.kind}) for j in default_judges()]
    backends = {j.model: load_backend(j.model, args.precision, args.device) for j in judges}
    panel = fit_panel(backends, judges, questions(domain), "mean", references)
    columns = ["question", "name", "calibration", "accuracy_raw", "auc_raw", "accuracy", "auc", "failed",
               "panel_agreement", "length_bias"]
    return panel.report[columns].round(3).to_string(index=False)


def run_config(args: argparse.Namespace) -> RunConfig:
    values = read_config_file(args.config, RunConfig)
    values.update({field: getattr(args, flag) for flag, field in RUN_FLAGS.items() if getattr(args, flag) is not None})
    budget = {f: getattr(args, f"budget_{f}") for f in BudgetConfig.model_fields if getattr(args, f"budget_{f}") is not None}
    if budget:
        given = values.get("budget", {})
        values["budget"] = {**given, **budget} if isinstance(given, dict) else given
    flags = {"enabled": True} if args.finetune or args.finetune_every else {}
    if args.finetune_every:
        flags["every"] = args.finetune_every
    if args.join_population:
        flags["join_population"] = True
    if flags:  # the flags add to the file's finetune settings (a malformed one is left for validation to name)
        given = values.get("finetune", {})
        values["finetune"] = {**given, **flags} if isinstance(given, dict) else given
    if getattr(args, "command", None) == "train-agent":  # the manager on, with the flags' strategies and policy
        given = values.get("manager", {})
        manager = {**given, "enabled": True} if isinstance(given, dict) else given
        for flag in ("strategies", "policy"):
            if getattr(args, flag) is not None and isinstance(manager, dict):
                manager[flag] = getattr(args, flag)
        values["manager"] = manager
    return RunConfig.model_validate(values)


def finetune_request(args: argparse.Namespace) -> dict:
    settings = FinetuneConfig(
        method=args.method, epochs=args.epochs, train_batch_size=args.train_batch_size, max_length=args.max_length,
        learning_rate=args.learning_rate, replay=args.replay, replay_priority=args.replay_priority,
    )
    if args.replay != "uniform" and args.run_dir is None:
        raise ValueError("--replay prioritized needs --run (a run's elites and judged candidates), not --data")
    return dict(data=args.data, run_dir=args.run_dir, base_model=args.base_model, text_column=args.text_column,
                register_as=args.register_as, settings=settings, out=args.out)


def evaluate_request(args: argparse.Namespace) -> dict:
    settings = EvaluateConfig(
        generations=args.generations, batch_size=args.batch_size, search=args.search, margin=args.margin,
        baselines=args.baselines,
    )
    run_settings = read_config_file(args.config, RunConfig)
    for flag, field in (("--domain", "domain"), ("--seed", "seed"), ("evaluate settings' flags", "evaluate")):
        if field in run_settings:
            raise ValueError(f"--config {args.config}: `{field}` is set by {flag} for evaluate, not in the file")
    RunConfig(domain=args.domain, seed=args.seed, evaluate=settings, **run_settings)  # one clear error, before any work
    experiment = {"experiment": run_settings.pop("experiment")} if "experiment" in run_settings else {}
    return dict(domain=args.domain, model=args.model, champion=args.champion, settings=settings, seed=args.seed,
                out=args.out, run_settings=run_settings, **experiment)


def rl_request(args: argparse.Namespace) -> dict:
    settings = RLConfig(**{f: getattr(args, f"rl_{f}") for f in RLConfig.model_fields
                           if getattr(args, f"rl_{f}", None) is not None})
    run_settings = read_config_file(args.config, RunConfig)
    if "domain" in run_settings:
        raise ValueError(f"--config {args.config}: `domain` is set by --domain for rl, not in the file")
    RunConfig(domain=args.domain, **run_settings)  # one clear error, before any work
    return dict(domain=args.domain, base_model=args.base_model, settings=settings, register_as=args.register_as,
                out=args.out, run_settings=run_settings)


def merge_request(args: argparse.Namespace) -> dict:
    settings = MergeConfig(method=args.method, weights=args.weights, density=args.density, seed=args.merge_seed)
    evaluation = EvaluateConfig(generations=args.generations, batch_size=args.batch_size, search=args.search,
                                margin=args.margin)
    return dict(models=args.models, settings=settings, domain=args.domain, evaluation=evaluation,
                register_as=args.register_as, seed=args.seed, device=args.device, out=args.out)


def print_passages(passages) -> None:
    for n, p in enumerate(passages, 1):
        extra = "".join(f", {k} {v}" for k, v in (("domain", p.domain), ("run", p.run), ("niche", p.niche)) if v)
        print(f"[{n}] {p.citation()}{extra}\n    {p.text[:400]}{'...' if len(p.text) > 400 else ''}")


def kb_command(args: argparse.Namespace) -> int:
    """`kb search`, `kb stats`, `kb export`: no flow, no Prefect server (`kb add` runs the ingest flow)."""
    from evoforge.knowledge.base import open_base
    from evoforge.knowledge.records import collect_records, write_records

    if args.kb_command == "search":
        filters = {name: getattr(args, name) for name in ("kind", "source", "domain", "run", "niche")}
        if filters["source"] and Path(filters["source"]).exists():  # sources are stored as absolute paths
            filters["source"] = str(Path(filters["source"]).absolute())
        print_passages(open_base(args.kb).search(args.query, args.k, **filters))
    elif args.kb_command == "stats":
        print(json.dumps(open_base(args.kb).stats(), indent=2))
    else:
        if not Path(args.runs).is_dir():
            raise ValueError(f"--runs {args.runs}: not a folder; give the folder that holds the ask and chat runs")
        records = collect_records(args.runs, args.rated_only)
        write_records(records, args.out)
        print(f"exported {len(records)} records ({sum(r['reward'] is not None for r in records)} rated) to {args.out}")
    return 0


# The commands that run a Prefect flow, so need a Prefect API (`ui` starts its own server; `judges` runs no flow).
FLOW_COMMANDS = ("run", "train-agent", "train-world", "test-agent", "finetune", "rl", "evaluate", "merge", "ask",
                 "kb")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from evoforge.core.domain import DomainError, field_path, load_domain
    from evoforge.training.finetuning import DatasetNotFoundError, dataset_files
    from evoforge.steps.evolution import ResumeError
    from models.resolve import ModelNotFoundError

    try:  # check the input before any server or model starts
        if args.command in ("run", "train-agent"):
            request = run_config(args)
            load_domain(request.domain).check_files()
            if request.value_model:  # a missing or wrong model file is said before the server starts
                from evoforge.steps.agents import load_world_model

                load_world_model(request.value_model)
        elif args.command == "train-world":
            request = WorldConfig(**{f: getattr(args, f"world_{f}") for f in WorldConfig.model_fields
                                     if getattr(args, f"world_{f}") is not None})
            for run_dir in request.runs:  # a wrong folder is said before the server starts
                if not (Path(run_dir) / "config.json").is_file():
                    raise ValueError(f"--runs {run_dir}: not a run folder (no config.json); pass folders that "
                                     "`evoforge run` wrote")
        elif args.command == "test-agent":
            request = AgentTestConfig(**{f: getattr(args, f) for f in ("agent", "generations", "seeds", "out")
                                         if getattr(args, f) is not None})
            if not (Path(request.agent) / "config.json").is_file():
                raise ValueError(f"--agent {request.agent}: not a run folder (no config.json); pass the folder of an "
                                 "`evoforge train-agent` run")
        elif args.command == "finetune":
            request = finetune_request(args)
            if request["data"] is not None:
                dataset_files(request["data"])
        elif args.command == "evaluate":
            request = evaluate_request(args)
            load_domain(request["domain"]).check_files()
        elif args.command == "rl":
            request = rl_request(args)
            load_domain(request["domain"]).check_files()
        elif args.command == "merge":
            from evoforge.training.merging import parent_adapters

            request = merge_request(args)
            load_domain(request["domain"]).check_files()
            parent_adapters(request["models"], request["settings"])
        elif args.command in ("ask", "chat"):
            request = tournament_config(args)
            if request.kb:  # an empty or missing base is said before the server starts
                from evoforge.knowledge.base import open_base

                open_base(request.kb).check_not_empty()
        elif args.command == "score":
            from evoforge.steps.scoring import read_texts

            values = read_config_file(args.config, RunConfig)
            request = (RunConfig.model_validate({**values, "domain": args.domain}), read_texts(args.input))
            load_domain(args.domain).check_files()
        elif args.command == "kb" and args.kb_command == "add":
            from evoforge.knowledge.sources import read_sources

            request = IngestConfig(path=args.path, kb=args.kb, chunk_words=args.chunk_words,
                                   overlap_words=args.overlap_words)
            read_sources(request.path)  # a missing path or nothing to ingest is said before the server starts
        elif args.command == "kb":
            return kb_command(args)
        elif args.command == "ui":
            request = json.loads(args.parameters)
            if "config" in request:
                RunConfig.model_validate(request["config"])
        else:
            load_domain(args.domain)
    except ValidationError as err:
        problems = "; ".join(f"--{field_path(e['loc'], flags=True)}: {' '.join(e['msg'].split())}" for e in err.errors())
        print(f"evoforge: invalid settings: {problems}", file=sys.stderr)
        return 2
    except (DomainError, OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        print(f"evoforge: {err}", file=sys.stderr)
        return 2

    # Prefect and torch are imported only once the input is known to be good.
    if args.command in FLOW_COMMANDS:
        from app.prefect_api import PrefectUnavailable, ensure_prefect_api

        try:
            ensure_prefect_api()
        except PrefectUnavailable as err:  # before the flow starts, so nothing under runs/ is touched
            print(f"evoforge: {err}", file=sys.stderr)
            return 2
    try:
        if args.command == "run":
            from flows.evolution import evolution_run

            summary = evolution_run(request)
        elif args.command == "train-agent":
            from flows.agents import train_agent_run

            summary = train_agent_run(request)
        elif args.command == "train-world":
            from flows.agents import train_world_model

            summary = train_world_model(request)
        elif args.command == "test-agent":
            from flows.agents import compare_agent

            summary = compare_agent(request)
            print(summary["table"])
            return 0
        elif args.command == "finetune":
            from flows.finetune import finetune_model

            summary = finetune_model(**request)
        elif args.command == "evaluate":
            from flows.finetune import evaluate_model

            summary = evaluate_model(**request)
        elif args.command == "rl":
            from flows.finetune import rl_finetune

            summary = rl_finetune(**request)
        elif args.command == "merge":
            from flows.merge import merge_models

            summary = merge_models(**request)
        elif args.command == "ui":
            from app.servers import Stack, StartupError, run_ui

            stack = Stack(args.host, args.prefect_port, args.mlflow_port, Path(args.state))
            try:
                return run_ui(stack, args.cron, args.timezone, request)
            except StartupError as err:
                print(f"evoforge: {err}", file=sys.stderr)
                return 2
        elif args.command == "score":
            from evoforge.steps.scoring import score_texts

            scores = score_texts(*request)
            scores.to_csv(args.output, index=False)
            flagged = int(scores["flagged"].sum()) if "flagged" in scores else 0
            print(f"scored {len(scores)} texts -> {args.output} ({flagged} flagged by the judge-gaming guards)")
            return 0
        elif args.command == "kb":
            from flows.ingest import ingest

            summary = ingest(request)
            print(f"knowledge base {request.kb}: {summary['added_chunks']} chunks added from "
                  f"{summary['added_sources']} new and {summary['replaced_sources']} changed sources, "
                  f"{summary['unchanged_sources']} unchanged skipped; now {summary['stats']['chunks']} chunks")
            for problem in summary["problems"]:
                print(f"evoforge: not ingested: {problem}", file=sys.stderr)
            return 2 if summary["problems"] else 0
        elif args.command == "chat":
            from app.chat import run_chat

            return run_chat(request)
        elif args.command == "ask":
            from flows.tournament import moe_tournament

            print_answer(moe_tournament(request))
            return 0
        else:
            print(judges_report(args))
            return 0
    except (ModelNotFoundError, DatasetNotFoundError, ResumeError, DomainError, ValueError, OSError) as err:
        print(f"evoforge: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    if summary.get("stopped_by"):
        print(f"evoforge: run {summary['run_name']} stopped by its budget ({summary['stopped_by']}) after "
              f"{summary['generations']} generations; run it again (same --run-name) with a larger budget to resume",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
