"""MAP-Elites archive over the judges' measure space, backed by a pyribs `GridArchive`.

pyribs grids have uniform cells, while the published QDAIF setting puts most bin boundaries near 0 and 1. So each
measure is first mapped to its bin index with `np.digitize` on the domain's boundaries, and the pyribs grid has one
unit-wide cell per bin: cell semantics stay exactly the published ones, and pyribs does storage and statistics.
"""

import numpy as np
import pandas as pd
from ribs.archives import GridArchive

NOT_ADDED, IMPROVED, NEW_CELL = 0, 1, 2
STATUS_NAMES = {NOT_ADDED: "not_added", IMPROVED: "improved", NEW_CELL: "new_cell"}


class QDArchive:
    """Best-quality candidate per cell. Qualities are in [0, 1]; QD score = sum of elite qualities."""

    def __init__(self, axis_names: list[str], bins: list[list[float]]):
        if len(axis_names) != len(bins):
            raise ValueError("one list of bin boundaries per axis is required")
        self.axis_names = list(axis_names)
        self.bins = [np.asarray(b, dtype=float) for b in bins]
        self.shape = tuple(len(b) + 1 for b in self.bins)
        self._grid = GridArchive(
            solution_dim=(),
            solution_dtype=object,  # the candidate's text
            dims=self.shape,
            ranges=[(0, n) for n in self.shape],
            extra_fields={
                "cid": ((), np.int64),
                "generation": ((), np.int64),
                "raw_measures": ((len(bins),), np.float64),
            },
        )

    # --- binning ---------------------------------------------------------------------------------------------
    def bin_index(self, measures: np.ndarray) -> np.ndarray:
        """Bin index per axis for measures in [0, 1]; shape (n, axes)."""
        measures = np.atleast_2d(np.asarray(measures, dtype=float))
        return np.stack([np.digitize(measures[:, j], b) for j, b in enumerate(self.bins)], axis=1)

    def cell_index(self, measures: np.ndarray) -> np.ndarray:
        """Flat cell index per candidate (row-major over the grid)."""
        return np.ravel_multi_index(tuple(self.bin_index(measures).T), self.shape)

    # --- insertion ---------------------------------------------------------------------------------------------
    def add(self, cids, texts, quality, measures, generation: int) -> np.ndarray:
        """Insert a batch; returns each candidate's own outcome: NEW_CELL, IMPROVED or NOT_ADDED.

        pyribs reports batch statuses against the archive *before* the batch, so two candidates landing in the
        same empty cell would both read "new". Here only the candidate that holds the cell afterwards counts, so
        rewards and the `inserted` flag are exact.
        """
        cids = np.asarray(cids, dtype=np.int64)
        quality = np.asarray(quality, dtype=float)
        measures = np.atleast_2d(np.asarray(measures, dtype=float))
        if len(cids) == 0:
            return np.zeros(0, dtype=np.int32)
        cells = self.cell_index(measures)
        occupied_before = self._occupied(cells)
        self._grid.add(
            solution=np.asarray(list(texts), dtype=object),
            objective=quality,
            measures=self.bin_index(measures) + 0.5,  # centre of the unit cell of that bin
            cid=cids,
            generation=np.full(len(cids), generation, dtype=np.int64),
            raw_measures=measures,
        )
        holder = self._holders(cells)
        won = holder == cids
        return np.where(won, np.where(occupied_before, IMPROVED, NEW_CELL), NOT_ADDED).astype(np.int32)

    def _occupied(self, cells: np.ndarray) -> np.ndarray:
        occupied, _ = self._grid.retrieve(self._cell_centres(cells))
        return occupied

    def _holders(self, cells: np.ndarray) -> np.ndarray:
        occupied, data = self._grid.retrieve(self._cell_centres(cells))
        return np.where(occupied, data["cid"], -1)

    def _cell_centres(self, cells: np.ndarray) -> np.ndarray:
        return np.stack(np.unravel_index(cells, self.shape), axis=1) + 0.5

    # --- statistics and views ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._grid)

    @property
    def num_cells(self) -> int:
        return int(np.prod(self.shape))

    def stats(self) -> dict[str, float]:
        s = self._grid.stats
        empty = s.num_elites == 0
        return {
            "qd_score": float(s.qd_score),
            "coverage": float(s.coverage),
            "num_elites": int(s.num_elites),
            "max_quality": 0.0 if empty else float(s.obj_max),
            "mean_quality": 0.0 if empty else float(s.obj_mean),
        }

    def elites(self) -> pd.DataFrame:
        """One row per elite: cid, text, quality, generation, each axis's measure and bin, flat cell."""
        columns = ["cid", "text", "quality", "generation", "cell"]
        columns += [f"measure_{a}" for a in self.axis_names] + [f"bin_{a}" for a in self.axis_names]
        if len(self) == 0:
            return pd.DataFrame({c: pd.Series(dtype=object if c == "text" else float) for c in columns})
        d = self._grid.data()
        bins = np.floor(d["measures"]).astype(int)
        out = pd.DataFrame(
            {
                "cid": d["cid"],
                "text": list(d["solution"]),
                "quality": d["objective"],
                "generation": d["generation"],
                "cell": np.ravel_multi_index(tuple(bins.T), self.shape),
            }
        )
        for j, a in enumerate(self.axis_names):
            out[f"measure_{a}"] = d["raw_measures"][:, j]
        for j, a in enumerate(self.axis_names):
            out[f"bin_{a}"] = bins[:, j]
        return out.sort_values("cell", ignore_index=True)

    def quality_grid(self) -> np.ndarray:
        """Elite quality per cell (NaN where empty), shaped like the grid; for heatmaps."""
        grid = np.full(self.shape, np.nan)
        e = self.elites()
        if len(e):
            grid.flat[e["cell"].to_numpy()] = e["quality"].to_numpy()
        return grid

    @classmethod
    def from_elites(cls, axis_names: list[str], bins: list[list[float]], elites: pd.DataFrame) -> "QDArchive":
        """Rebuild an archive from an `elites()` snapshot (for resuming a run)."""
        archive = cls(axis_names, bins)
        for generation, rows in elites.groupby("generation"):
            archive.add(
                rows["cid"].to_numpy(),
                rows["text"].tolist(),
                rows["quality"].to_numpy(),
                rows[[f"measure_{a}" for a in axis_names]].to_numpy(),
                generation=int(generation),
            )
        return archive


class PerElite:
    """A value per live elite (an embedding, a held-out judge's bins), each computed once when the elite first
    appears; a memo, so filling it changes no result."""

    def __init__(self):
        self.cache: dict[int, object] = {}

    def values(self, elites: pd.DataFrame, compute) -> list:
        """The values in the elites' order; `compute(texts)` is called for the new elites only, and the memo is
        pruned to the live ones."""
        missing = [c for c in elites["cid"] if c not in self.cache]
        if missing:
            self.cache.update(zip(missing, compute(elites.set_index("cid").loc[missing, "text"].tolist())))
        live = set(elites["cid"])
        self.cache = {c: v for c, v in self.cache.items() if c in live}
        return [self.cache[c] for c in elites["cid"]]
