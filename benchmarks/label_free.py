"""Label-free calibration, checked where labels exist: are weak references as good as real ones?

    .venv/bin/python benchmarks/label_free.py [--per-pole 12] [--domains opinions stories]

For each domain that ships reference labels, the run's default judges are calibrated four ways, then scored on
the domain's labelled references: raw (none), Platt on the real labels (in sample, so an upper bound), and the two
label-free ways on weak references the generator writes at each pole (`evoforge.judges.weak_labels`): anchors
(the default for weak references) and Platt. Per axis it reports accuracy and AUC against the real labels, the
spread of the calibrated measure over the references (10th-90th percentile) and the share of references in the
outer bins (< 0.05 or > 0.95), where the published grids put most of their cells.

Writes benchmarks/results/<date>-<host>-label-free.json and prints a Markdown table.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.core.config import RunConfig  # noqa: E402
from evoforge.core.domain import load_domain  # noqa: E402
from evoforge.judges.measures import accuracy, auc  # noqa: E402
from evoforge.judges.panel import domain_columns, fit_panel, questions  # noqa: E402
from evoforge.judges.weak_labels import pole_references  # noqa: E402


def check(backends: dict, domain_name: str, per_pole: int, max_new_tokens: int) -> list[dict]:
    domain = load_domain(domain_name)
    judges, columns = RunConfig().judges, domain_columns(domain)
    real = domain.load_references()
    weak = pole_references(backends["smollm2"], domain, per_pole, max_new_tokens)
    ways = {"none": (None, "platt"), "platt on real labels (in sample)": (real, "platt"),
            "anchors on weak references": (weak, "anchors"), "platt on weak references": (weak, "platt")}
    rows = []
    for way, (references, auto) in ways.items():
        panel = fit_panel(backends, judges, questions(domain), "mean", references, columns, guard=False,
                          auto_calibration=auto)
        scores = panel.judge(backends, real["text"].tolist())
        for axis in domain.axis_names:
            labels = real[axis].to_numpy(dtype=float)
            ok = ~np.isnan(labels)
            measure = scores[f"measure_{axis}"].to_numpy()[ok]
            low, high = np.nanpercentile(measure, [10, 90])
            rows.append({"domain": domain.name, "axis": axis, "calibration": way, "references": int(ok.sum()),
                         "weak_references": len(weak), "accuracy": accuracy(measure, labels[ok]),
                         "auc": auc(measure, labels[ok]), "p10": float(low), "p90": float(high),
                         "outer_share": float(np.mean((measure < 0.05) | (measure > 0.95)))})
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| domain | axis | calibration | accuracy | AUC | measure 10th-90th percentile | in outer bins |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['domain']} | {r['axis']} | {r['calibration']} | {r['accuracy']:.2f} | {r['auc']:.2f} "
                     f"| {r['p10']:.2f}-{r['p90']:.2f} | {r['outer_share']:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domains", nargs="+", default=["opinions", "stories"])
    p.add_argument("--per-pole", type=int, default=12, help="weak references per pole of each axis")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared machine)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from benchmarks.machine import machine_info, save_table
    from models.devices import resolve_precision
    from models.loading import load_backend

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    machine = {**machine_info(), "precision": resolve_precision("auto")}
    backends = {"smollm2": load_backend("smollm2", "auto")}
    rows = [row for name in args.domains for row in check(backends, name, args.per_pole, args.max_new_tokens)]
    payload = {"machine": machine, "per_pole": args.per_pole, "max_new_tokens": args.max_new_tokens, "rows": rows,
               "table": markdown(rows)}
    save_table(args.results, "label-free", payload)
    return payload


if __name__ == "__main__":
    main()
