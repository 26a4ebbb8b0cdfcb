"""The science benchmark: does a search method find more than random search at the same candidate budget?

    make science               # or: .venv/bin/python benchmarks/science.py [--quick] [--domains ...] [--seeds ...]

Runs the real `evolution_run` flow for each domain x search method x seed, all with the same number of candidates
(every candidate judged once by the same panel), in one process: the models load once and every run reuses them.
Per method it reports QD score, coverage, mean and max elite quality, mean candidate quality, elite diversity
(MiniLM), wall time and QD per wall-hour, as the mean and 95% interval over seeds, and the ratio to `zero_shot`
(random search) with a bootstrap 95% interval. A held-out judge (another phrasing in the other prompt format,
never used during the runs, calibrated the same way) re-places every final elite: the share it puts in the same
or a neighbouring cell shows whether a method won by gaming the run's own judges.

Writes benchmarks/results/<date>-<host>-science.json, a QD-vs-candidates plot with 95% bands (PNG, also logged to
MLflow, experiment `evoforge-science`) and prints the Markdown table (for the README).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

# Importing evoforge first turns telemetry off and gives Prefect's temporary server minutes to start.
from evoforge.judges.panel import bin_agreement, heldout_bins  # noqa: E402

METHODS = ["splice", "lmx", "zero_shot", "fixed_few_shot"]
BASELINE = "zero_shot"
METRICS = ["qd_score", "coverage", "mean_quality", "max_quality", "candidate_mean_quality", "elite_diversity",
           "shared_opening", "heldout_agreement", "heldout_same_cell", "wall_s", "qd_per_hour"]
OPENING_WORDS = 5  # elites that start with the same 5 words are one family (a parent and its spliced children)


def shared_opening(texts: list[str]) -> float:
    """Share of elites whose first OPENING_WORDS words another elite starts with too: near-copies that fill
    neighbouring cells (0 when every elite starts its own way)."""
    heads = pd.Series([" ".join(t.split()[:OPENING_WORDS]) for t in texts])
    return float(heads.duplicated(keep=False).mean()) if len(heads) else 0.0


def interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over seeds (the mean itself as both ends for a single value)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def ratio_interval(values, baseline, rng: np.random.Generator, resamples: int = 10_000) -> tuple[float, float, float]:
    """Ratio of means (method / baseline) and its bootstrap 95% interval, resampling each arm's seeds."""
    values, baseline = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if baseline.mean() <= 0:
        return float("nan"), float("nan"), float("nan")
    a = rng.choice(values, size=(resamples, len(values))).mean(axis=1)
    b = rng.choice(baseline, size=(resamples, len(baseline))).mean(axis=1)
    ratios = a / np.where(b > 0, b, np.nan)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return float(values.mean() / baseline.mean()), float(low), float(high)


def heldout_agreement(heldout_panel, backends: dict, archive, elites: pd.DataFrame) -> tuple[float, float]:
    """Share of the final elites the held-out judge places in the same cell, and in the same or a neighbouring
    cell (at most one bin away on every axis): the check a run also logs per generation."""
    if len(elites) == 0:
        return float("nan"), float("nan")
    theirs = heldout_bins(heldout_panel, backends, archive.bin_index, archive.axis_names, elites["text"].tolist())
    return bin_agreement(elites[[f"bin_{a}" for a in archive.axis_names]].to_numpy(dtype=int), theirs)


def run_one(config, heldout_panel, backends, embedder) -> dict:
    """One real flow run and its scores."""
    from evoforge.core.archive import QDArchive
    from evoforge.core.domain import load_domain
    from flows.evolution import evolution_run
    from models.embedder import mean_pairwise_distance

    started = time.perf_counter()
    summary = evolution_run(config)
    wall = time.perf_counter() - started
    run_dir = Path(summary["run_dir"])
    domain = load_domain(config.domain)
    archive = QDArchive(domain.axis_names, [a.bins for a in domain.axes])
    elites = pd.read_parquet(run_dir / "archive.parquet")
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    valid = candidates[candidates["valid"]]
    same, near = heldout_agreement(heldout_panel, backends, archive, elites)
    history = json.loads((run_dir / "state.json").read_text())["history"]
    return {
        "domain": domain.name, "method": config.search, "seed": config.seed, "run_dir": str(run_dir),
        "qd_score": summary["qd_score"], "coverage": summary["coverage"], "num_elites": summary["num_elites"],
        "mean_quality": summary["mean_quality"], "max_quality": summary["max_quality"],
        "candidate_mean_quality": float(valid["quality"].mean()) if len(valid) else 0.0,
        "elite_diversity": mean_pairwise_distance(embedder.embed(elites["text"].tolist())) if len(elites) else 0.0,
        "shared_opening": shared_opening(elites["text"].tolist()),
        "heldout_same_cell": same, "heldout_agreement": near,
        "wall_s": wall, "qd_per_hour": summary["qd_score"] / wall * 3600,
        "qd_curve": [h["qd_score"] for h in history],
        "candidates": int(len(candidates)),
    }


def summarise(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per domain and method: mean and 95% interval of every metric, and the QD ratio to random search."""
    rng = np.random.default_rng(seed)
    rows = []
    for (domain, method), group in runs.groupby(["domain", "method"], sort=False):
        row = {"domain": domain, "method": method, "seeds": len(group)}
        for metric in (m for m in METRICS if m in group):  # results from before a metric existed lack it
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = interval(group[metric].dropna())
        base = runs[(runs["domain"] == domain) & (runs["method"] == BASELINE)]
        if len(base):
            for metric in ("qd_score", "coverage"):
                row[f"{metric}_ratio"], row[f"{metric}_ratio_low"], row[f"{metric}_ratio_high"] = ratio_interval(
                    group[metric], base[metric], rng)
        rows.append(row)
    return pd.DataFrame(rows)


def cell(row: dict, metric: str, fmt: str = "{:.2f}") -> str:
    """A summary row's metric as 'mean (low-high)' for a Markdown table."""
    return f"{fmt.format(row[metric])} ({fmt.format(row[f'{metric}_low'])}-{fmt.format(row[f'{metric}_high'])})"


def markdown_table(summary: pd.DataFrame) -> str:
    lines = ["| domain | search | seeds | QD score (95% CI) | x random search (95% CI) | coverage | mean / max elite quality "
             "| candidate quality | elite diversity | elites sharing an opening | held-out judge: same or next cell "
             "| wall time per run | QD per hour |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary.to_dict("records"):
        ratio = (f"{row['qd_score_ratio']:.2f}x ({row['qd_score_ratio_low']:.2f}-{row['qd_score_ratio_high']:.2f})"
                 if "qd_score_ratio" in row and not pd.isna(row.get("qd_score_ratio")) else "")
        lines.append(
            f"| {row['domain']} | `{row['method']}` | {row['seeds']} | {cell(row, 'qd_score')} | {ratio} "
            f"| {row['coverage']:.1%} | {row['mean_quality']:.2f} / {row['max_quality']:.2f} "
            f"| {row['candidate_mean_quality']:.2f} | {row['elite_diversity']:.3f} "
            f"| {row.get('shared_opening', float('nan')):.0%} | {row['heldout_agreement']:.0%} "
            f"| {row['wall_s']:.0f} s | {row['qd_per_hour']:.0f} |")
    return "\n".join(lines)


def qd_plot(runs: pd.DataFrame, batch_size: int, path: Path) -> Path:
    """QD score against candidates seen, per domain, one line per method with its 95% band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(dict.fromkeys(runs["domain"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(5 * len(domains), 3.8), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for method, group in runs[runs["domain"] == domain].groupby("method", sort=False):
            curves = np.array([c for c in group["qd_curve"]], dtype=float)
            x = batch_size * np.arange(1, curves.shape[1] + 1)
            stats = np.array([interval(curves[:, g]) for g in range(curves.shape[1])])
            ax.plot(x, stats[:, 0], label=method, marker="o", markersize=3)
            ax.fill_between(x, stats[:, 1], stats[:, 2], alpha=0.2)
        ax.set_title(domain)
        ax.set_xlabel("candidates judged")
        ax.set_ylabel("QD score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def panel_settings(panel: str) -> dict:
    """RunConfig fields for a `--panel` choice."""
    from evoforge.core.config import default_judges, default_run_judges

    if panel == "chat":  # the panel before embedding judges: two chat judges, averaged
        return {"judges": default_judges(), "combine": "mean"}
    return {"judges": default_run_judges(), "combine": "auto"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny variant that checks the benchmark works (minutes)")
    p.add_argument("--domains", nargs="+", default=None, help="default: opinions stories jaws (quick: jaws)")
    p.add_argument("--methods", nargs="+", default=None, choices=["splice", "target", "target_zero_shot", "lmx", "zero_shot", "fixed_few_shot", "niche"],
                   help=f"default: {' '.join(METHODS)} (quick: splice zero_shot)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (quick: 0 1)")
    p.add_argument("--generations", type=int, default=None, help="default 8 (quick 2)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 (quick 4)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 40 (quick 16)")
    p.add_argument("--weak-references", type=int, default=12,
                   help="texts the generator writes per pole to calibrate the judges of a domain without references "
                   "(jaws) by anchors; 0: its judges stay raw (default 12)")
    p.add_argument("--panel", choices=["embedding", "chat"], default="embedding",
                   help="'embedding' (the runs' default): the two chat judges and a MiniLM embedding judge of the "
                   "measures, combined per question by Bayesian model averaging on the labelled texts (combine: "
                   "auto); 'chat': the two chat judges averaged (the panel before 2026-11-26)")
    p.add_argument("--tag", default="", help="suffix of the results files' name (e.g. '-part2')")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1). On a machine whose cores other jobs also use, 1 is much faster "
                   "than 2: measured 7-9 s vs 38-66 s for one batch on 2 shared cores")
    p.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON and PNG")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="no runs: summarise, plot and print earlier results files (one stopped early, or several "
                   "run at the same budget, e.g. a method added later; the first file's name is kept)")
    args = p.parse_args(argv)
    quick = args.quick
    args.domains = args.domains or (["jaws"] if quick else ["opinions", "stories", "jaws"])
    args.methods = args.methods or (["splice", "zero_shot"] if quick else METHODS)
    args.seeds = args.seeds if args.seeds is not None else ([0, 1] if quick else [0, 1, 2])
    args.generations = args.generations or (2 if quick else 8)
    args.batch_size = args.batch_size or (4 if quick else 16)
    args.max_new_tokens = args.max_new_tokens or (16 if quick else 40)
    return args


def report(paths: list[Path]) -> dict:
    """Summary, table and plot again from results files' runs (a benchmark stopped early keeps its runs; files
    of the same budget combine, e.g. a method run later), written over the first file."""
    payloads = [json.loads(p.read_text()) for p in paths]
    if any(p["budget"] != payloads[0]["budget"] for p in payloads):
        raise SystemExit(f"--report: the files ran at different budgets {[p['budget'] for p in payloads]}; "
                         "combine only runs of one budget")
    payload, path = payloads[0], paths[0]
    payload["runs"] = [run for p in payloads for run in p["runs"]]
    for run in payload["runs"]:  # results written before the metric existed: measured again where the run is kept
        archive = Path(run["run_dir"]) / "archive.parquet"
        if "shared_opening" not in run and archive.is_file():
            run["shared_opening"] = shared_opening(pd.read_parquet(archive)["text"].tolist())
    payload["methods"] = list(dict.fromkeys(m for p in payloads for m in p["methods"]))
    payload["seconds"] = sum(p["seconds"] for p in payloads)
    runs = pd.DataFrame(payload["runs"])
    summary = summarise(runs)
    plot = qd_plot(runs, payload["budget"]["batch_size"], path.with_suffix(".png"))
    payload.update(summary=summary.to_dict("records"), table=markdown_table(summary), plot=plot.name)
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(payload["table"])
    return payload


def shared_models(threads: int):
    """The machine (printed) and the models every run of a benchmark shares, loaded once in this process with
    `threads` torch threads (0: torch's default): the flows' own `load_backend` calls return the same copy."""
    from benchmarks.machine import machine_at_start
    from models.embedder import load_embedder
    from models.loading import load_backend

    if threads:
        import torch

        torch.set_num_threads(threads)
    machine = machine_at_start()
    print(f"machine: {machine}", flush=True)
    return machine, {"smollm2": load_backend("smollm2", "auto")}, load_embedder()


def heldout_panel(panels: dict, config, domain, backends: dict):
    """The held-out judge of `domain` for a benchmark's runs, fitted once (kept in `panels`) on the references the
    runs' judges are calibrated on."""
    from evoforge.judges.panel import fit_heldout_panel
    from evoforge.steps.evolution import run_references

    if domain.name not in panels:
        references = run_references(config, domain, backends)
        panels[domain.name] = fit_heldout_panel(backends, domain, references.texts, references.auto_calibration)
    return panels[domain.name]


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.report:
        return report([Path(p) for p in args.report])
    out = Path(args.out or tempfile.mkdtemp(prefix="evoforge-science-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    from evoforge.core.config import RunConfig
    from evoforge.core.domain import load_domain

    started = time.perf_counter()
    machine, backends, embedder = shared_models(args.threads)
    budget = dict(generations=args.generations, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                  weak_references=args.weak_references)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now(timezone.utc):%Y-%m-%d}-{machine['host']}-science{'-quick' if args.quick else ''}{args.tag}"
    heldout_panels, records = {}, []
    # Seed-major order: after each seed every domain and method has the same number of runs, and the results
    # written after each run are a usable (smaller) benchmark if it is stopped early.
    for seed in args.seeds:
        for domain_name in args.domains:
            domain = load_domain(domain_name)
            for method in args.methods:
                config = RunConfig(domain=domain_name, search=method, seed=seed, out=str(out),
                                   run_name=f"{domain.name}-{method}-s{seed}-{stamp}", experiment="evoforge-science",
                                   heldout_judge=False, **budget, **panel_settings(args.panel))  # held-out: below
                record = run_one(config, heldout_panel(heldout_panels, config, domain, backends), backends, embedder)
                records.append(record)
                print(f"{domain.name:9s} {method:15s} seed {seed}: QD {record['qd_score']:.2f}, coverage "
                      f"{record['coverage']:.0%}, held-out agreement {record['heldout_agreement']:.0%}, "
                      f"{record['wall_s']:.0f} s", flush=True)
                runs = pd.DataFrame(records)
                summary = summarise(runs)
                table = markdown_table(summary)
                payload = {"machine": machine, "budget": {**budget, "candidates": args.generations * args.batch_size}, "panel": args.panel,
                           "domains": args.domains, "methods": args.methods, "seeds": args.seeds,
                           "seconds": time.perf_counter() - started, "complete": False,
                           "summary": summary.to_dict("records"), "runs": records, "table": table}
                path = results / f"{name}.json"
                path.write_text(json.dumps(payload, indent=2, default=float))
    plot = qd_plot(runs, args.batch_size, results / f"{name}.png")
    payload.update(complete=True, plot=plot.name, seconds=time.perf_counter() - started)
    path.write_text(json.dumps(payload, indent=2, default=float))
    import mlflow

    mlflow.set_experiment("evoforge-science")
    with mlflow.start_run(run_name=name):
        mlflow.log_params({"panel": args.panel, "domains": " ".join(args.domains), "methods": " ".join(args.methods),
                           "seeds": " ".join(map(str, args.seeds)), **budget})
        for row in summary.to_dict("records"):
            for metric in ("qd_score", "coverage", "qd_score_ratio", "heldout_agreement"):
                if metric in row and not pd.isna(row[metric]):
                    mlflow.log_metric(f"{row['domain']}/{row['method']}/{metric}", float(row[metric]))
        mlflow.log_artifact(str(plot), "plots")
        mlflow.log_artifact(str(path), "results")
    print(table)
    print(f"\nresults: {path}\nplot: {plot}\nruns: {out}")
    return payload


if __name__ == "__main__":
    main()
