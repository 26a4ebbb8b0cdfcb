"""Heritability of the variation operators: which one moves a child beyond an extreme parent?

    .venv/bin/python benchmarks/heritability.py RUN_DIR [--children 12] [--threads 1]

Takes the least and the most extreme elite (on the first axis) of a finished run's `archive.parquet` as parents and,
for each, writes `--children` texts with each operator, aimed at the parent's own pole, then judges them with the
run domain's panel:
- `new text`: the plain zero-shot prompt (random search);
- `new text aimed`: the open line names the pole (`target_zero_shot`);
- `named example`: the parent as the one few-shot example, its niche named, the open line naming the pole;
- `opening (words)`: a third to two thirds of the parent's words, continued (a one-sentence parent's opening);
- `opening (first sentence)`: the parent's first sentence, continued (`splice`).
Per operator: mean, spread and range of the children's measure, the share beyond the parent, and mean quality.
Writes benchmarks/results/<date>-<host>-heritability-<run>.json and prints a Markdown table.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")

from evoforge.core.config import RunConfig  # noqa: E402
from evoforge.core.domain import load_domain  # noqa: E402
from evoforge.core.niches import niche_wish  # noqa: E402
from evoforge.core.prompts import few_shot_prompt, trim_to_last_sentence  # noqa: E402
from evoforge.search.generation import complete, join_opening  # noqa: E402
from evoforge.search.targeting import labelled_prompt, sentence_openings, word_opening  # noqa: E402
from evoforge.steps.evolution import make_panel  # noqa: E402
from models.backend import SamplingSettings  # noqa: E402


def operators(domain, parent: pd.Series, axis: str, pole_bin: int, children: int, rng) -> dict:
    """Per operator: (prompt, opening) for each child."""
    g = domain.generator
    system = g.system_prompts[0]
    wish = niche_wish(domain, [pole_bin])
    aimed = labelled_prompt(system, g.template, [], wish, g.separator)
    text = str(parent["text"]).strip()
    first = (sentence_openings(text) or [text])[0]
    example = [(text, niche_wish(domain, [int(parent[f"bin_{axis}"])]))]
    return {
        "new text": [(few_shot_prompt(system, g.template, [], g.separator), "")] * children,
        "new text aimed": [(aimed, "")] * children,
        "named example": [(labelled_prompt(system, g.template, example, wish, g.separator), "")] * children,
        "opening (words)": [(aimed + o, o) for o in (word_opening(text, rng) for _ in range(children))],
        "opening (first sentence)": [(aimed + first, first)] * children,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a finished run's folder (its archive.parquet and config.json)")
    p.add_argument("--children", type=int, default=12)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from benchmarks.machine import machine_info, save_table
    from models.loading import load_backend

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run = Path(args.run_dir)
    config = RunConfig.model_validate_json((run / "config.json").read_text())
    domain = load_domain(config.domain)
    axis, axis_config = domain.axis_names[0], domain.axes[0]
    backends = {"smollm2": load_backend("smollm2", "auto")}
    panel = make_panel(config, domain, backends)
    elites = pd.read_parquet(run / "archive.parquet").sort_values(f"measure_{axis}")
    rng = np.random.default_rng(0)
    rows = []
    for side, parent, pole in (("low", elites.iloc[0], 0), ("high", elites.iloc[-1], axis_config.num_bins - 1)):
        measure = float(parent[f"measure_{axis}"])
        for name, items in operators(domain, parent, axis, pole, args.children, rng).items():
            settings = [SamplingSettings(max_new_tokens=args.max_new_tokens)] * len(items)
            done = complete(backends["smollm2"], [prompt for prompt, _ in items], settings,
                            config.continue_tokens, seed=1, separator=domain.generator.separator)
            texts = [trim_to_last_sentence(join_opening(o, t)) for (_, o), (t, _, _) in zip(items, done)]
            scores = panel.judge(backends, texts)
            m = scores[f"measure_{axis}"].to_numpy()
            beyond = m < measure if side == "low" else m > measure
            rows.append({"side": side, "parent": measure, "operator": name, "mean": float(np.nanmean(m)),
                         "sd": float(np.nanstd(m)), "min": float(np.nanmin(m)), "max": float(np.nanmax(m)),
                         "beyond": float(np.mean(beyond)), "quality": float(scores["quality"].mean())})
            print(rows[-1], flush=True)
    table = ["| parent | operator | children's measure: mean (sd) | range | beyond the parent | quality |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['parent']:.3f} | {r['operator']} | {r['mean']:.2f} ({r['sd']:.2f}) | {r['min']:.3f}-{r['max']:.3f} "
              f"| {r['beyond']:.0%} | {r['quality']:.2f} |" for r in rows]
    machine = machine_info()
    payload = {"machine": machine, "run": run.name, "domain": domain.name, "children": args.children, "rows": rows,
               "table": "\n".join(table)}
    save_table(args.results, f"heritability-{run.name}", payload)
    return payload


if __name__ == "__main__":
    main()
