"""Plots logged to MLflow: the archive heatmap, the QD-score curve, each judge's score distribution, and the
experts' lineage."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _bin_labels(bins: np.ndarray) -> list[str]:
    edges = [0.0, *bins, 1.0]
    return [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, edges[1:])]


def archive_heatmap(quality_grid: np.ndarray, axis_names: list[str], bins: list, title: str, path: Path) -> Path:
    """Elite quality per cell; empty cells are blank. 1D archives show as a one-row strip."""
    grid = quality_grid if quality_grid.ndim == 2 else quality_grid[None, :]
    fig, ax = plt.subplots(figsize=(max(6, grid.shape[1] * 0.55), max(2.2, grid.shape[0] * 0.55 + 1.2)))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label="elite quality")
    ax.set_xticks(range(grid.shape[1 if quality_grid.ndim == 2 else 1]))
    x_axis = 1 if quality_grid.ndim == 2 else 0
    ax.set_xticklabels(_bin_labels(np.asarray(bins[x_axis])), rotation=70, fontsize=7)
    ax.set_xlabel(f"{axis_names[x_axis]} (P of first label)")
    if quality_grid.ndim == 2:
        ax.set_yticks(range(grid.shape[0]))
        ax.set_yticklabels(_bin_labels(np.asarray(bins[0])), fontsize=7)
        ax.set_ylabel(axis_names[0])
    else:
        ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def qd_curve(history: pd.DataFrame, path: Path) -> Path:
    """QD score and coverage per generation, from a frame with columns generation, qd_score, coverage."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["generation"], history["qd_score"], marker="o", label="QD score")
    ax.set_xlabel("generation")
    ax.set_ylabel("QD score")
    twin = ax.twinx()
    twin.plot(history["generation"], history["coverage"], color="tab:orange", marker=".", label="coverage")
    twin.set_ylabel("coverage")
    twin.set_ylim(0, 1)
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def judge_histograms(candidates: pd.DataFrame, path: Path) -> Path:
    """One histogram per judge score column: how biased toward one answer each judge is."""
    columns = [c for c in candidates.columns if c.startswith("judge_")]
    fig, axes = plt.subplots(1, len(columns), figsize=(3 * len(columns), 2.8), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.hist(candidates[column].dropna(), bins=20, range=(0, 1), color="tab:blue")
        ax.set_title(column.removeprefix("judge_"), fontsize=9)
        ax.set_xlabel("P(first label)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def qd_comparison(histories: pd.DataFrame, path: Path) -> Path:
    """QD score per generation for each evaluated model (one column each)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label in histories.columns:
        ax.plot(histories.index, histories[label], marker="o", label=label)
    ax.set_xlabel("generation")
    ax.set_ylabel("QD score")
    ax.set_title("Evaluation: QD score per generation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lineage_plot(experts: pd.DataFrame, path: Path) -> Path:
    """Evolving arrangements: one horizontal lifeline per expert (generations on x) from the first generation it
    writes in (`born`) to its last row, coloured by its system prompt; a dashed line from each parent (in the
    generation the child was made after) to the child; an x where an expert was culled. `experts`: the rows of
    experts.parquet (generation, expert_id, system_prompt, parent_ids, born, culled)."""
    last = int(experts["generation"].max())
    first_rows = experts.sort_values("generation").drop_duplicates("expert_id").set_index("expert_id")
    ends = experts.groupby("expert_id")["generation"].max()
    culled = experts.dropna(subset=["culled"]).set_index("expert_id")["culled"] if "culled" in experts else pd.Series()
    ids = sorted(first_rows.index)
    y = {expert_id: k for k, expert_id in enumerate(ids)}
    personas = list(dict.fromkeys(first_rows.sort_index()["system_prompt"]))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(max(9, 0.6 * (last + 2) + 4), max(2.5, 0.3 * len(ids) + 1.2)))
    for expert_id in ids:
        row = first_rows.loc[expert_id]
        born, end = int(row["born"]), int(ends[expert_id])
        colour = colours(personas.index(row["system_prompt"]) % 10)
        # A dot where it starts: a child made after the last generation has no line yet.
        ax.plot([born, max(born, end)], [y[expert_id]] * 2, color=colour, linewidth=3, marker="o", markersize=4,
                markevery=[0])
        for parent in row["parent_ids"]:
            if int(parent) in y:
                ax.plot([born - 1, born], [y[int(parent)], y[expert_id]], color="grey", linestyle="--", linewidth=1)
        if expert_id in culled.index:
            ax.plot(int(culled[expert_id]), y[expert_id], marker="x", color="tab:red", markersize=9, mew=2)
    for k, persona in enumerate(personas):
        ax.plot([], [], color=colours(k % 10), linewidth=3, label=f"prompt {k}: {persona[:40]}")
    ax.plot([], [], marker="x", color="tab:red", linestyle="", label="culled")
    ax.set_yticks(range(len(ids)))
    ax.set_yticklabels([str(i) for i in ids], fontsize=7)
    ax.set_ylabel("expert")
    ax.set_xlabel("generation")
    ax.set_xlim(-0.5, last + 1.5)
    ax.set_title(f"Lineage: {len(ids)} experts, {len(culled)} culled")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
