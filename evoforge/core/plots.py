"""Plots logged to MLflow: the archive heatmap, the QD-score curve, and each judge's score distribution."""

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
