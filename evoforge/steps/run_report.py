"""The end of an evolution run: merged Parquet, plots and artifacts, and the summary shown in the Prefect UI."""

import pandas as pd

from evoforge.core import plots
from evoforge.core.store import write_parquet
from evoforge.core.tracking import Tracker
from evoforge.steps.evolution import RunState


def write_run_outputs(state: RunState, tracker: Tracker) -> dict:
    """Merge the candidates, draw the plots, log the artifacts; returns the run's summary."""
    store, domain = state.store, state.domain
    candidates_path = store.merge_candidates(state.completed)
    archive_path = write_parquet(state.archive.elites(), store.root / "archive.parquet")
    plot_dir = store.root / "plots"
    plot_dir.mkdir(exist_ok=True)
    stats = state.archive.stats()
    title = f"{domain.name}: QD score {stats['qd_score']:.2f}, coverage {stats['coverage']:.0%}"
    heatmap = plots.archive_heatmap(
        state.archive.quality_grid(), domain.axis_names, [a.bins for a in domain.axes], title, plot_dir / "archive_heatmap.png"
    )
    curve = plots.qd_curve(pd.DataFrame(state.history), plot_dir / "qd_curve.png")
    judges = plots.judge_histograms(pd.read_parquet(candidates_path), plot_dir / "judge_scores.png")
    drawn = [heatmap, curve, judges]
    if state.config.arrangements.evolve:  # who descends from whom, and who was culled
        drawn.append(plots.lineage_plot(pd.read_parquet(store.experts_path), plot_dir / "lineage.png"))
    for path in drawn:
        tracker.log_artifact(path, "plots")
    for path in (candidates_path, archive_path, store.experts_path, store.root / "config.json"):
        tracker.log_artifact(path, "data")
    tracker.finish("FINISHED")
    return {
        "run_name": state.run_name,
        "run_dir": str(store.root),
        "mlflow_run_id": tracker.run_id,
        "mlflow_run_url": tracker.run_url(),
        "generations": state.completed,
        **stats,
    }


def top_elites(state: RunState, n: int = 10, chars: int = 160) -> list[dict]:
    """The best `n` elites, one per niche, for a table: niche, measures, quality and the start of the text."""
    elites = state.archive.elites().sort_values("quality", ascending=False).head(n)
    measures = [c for c in elites.columns if c.startswith("measure_")]
    return [
        {"niche": int(row["cell"]), "quality": round(float(row["quality"]), 4),
         **{m.removeprefix("measure_"): round(float(row[m]), 4) for m in measures},
         "generation": int(row["generation"]), "text": row["text"][:chars] + ("..." if len(row["text"]) > chars else "")}
        for _, row in elites.iterrows()
    ]


def summary_markdown(state: RunState, summary: dict, elites: list[dict]) -> str:
    """The run's summary for the Prefect UI: headline metrics, where the data is, and the best elites."""
    mlflow = (f"[{summary['mlflow_run_id']}]({summary['mlflow_run_url']})" if summary.get("mlflow_run_url")
              else f"`{summary['mlflow_run_id']}` (local database: `make mlflow-ui`)")
    lines = [
        f"# Evolution run `{state.run_name}` ({state.domain.name})", "",
        "| QD score | coverage | best quality | elites | generations |", "|---|---|---|---|---|",
        f"| {summary['qd_score']:.3f} | {summary['coverage']:.1%} | {summary['max_quality']:.3f} | "
        f"{summary['num_elites']} | {summary['generations']} |", "",
        f"MLflow run: {mlflow}  ", f"Run folder: `{summary['run_dir']}`", "", "## Best elites", "",
    ]
    lines += [f"{i + 1}. **{e['quality']:.3f}** (niche {e['niche']}): {e['text']}" for i, e in enumerate(elites[:5])]
    return "\n".join(lines) + "\n"

