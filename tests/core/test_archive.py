import numpy as np
import pytest

from evoforge.core.archive import IMPROVED, NEW_CELL, NOT_ADDED, QDArchive

PUBLISHED_1D = [0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995]
PUBLISHED_2D = [0.005, 0.02, 0.05, 0.2, 0.5, 0.8, 0.95, 0.98, 0.995]


def test_non_uniform_binning_follows_the_boundaries():
    archive = QDArchive(["sentiment"], [PUBLISHED_1D])
    measures = np.array([[0.0], [0.0049], [0.005], [0.012], [0.3], [0.5], [0.9951], [1.0]])
    assert archive.bin_index(measures)[:, 0].tolist() == [0, 0, 1, 2, 9, 10, 19, 19]
    assert archive.num_cells == 20


def test_two_dimensional_cells_are_row_major():
    archive = QDArchive(["genre", "ending"], [PUBLISHED_2D, PUBLISHED_2D])
    assert archive.shape == (10, 10)
    assert archive.cell_index(np.array([[0.0, 0.0], [0.0, 0.999], [0.999, 0.0], [0.3, 0.6]])).tolist() == [0, 9, 90, 45]


def test_qd_score_coverage_and_quality_stats():
    archive = QDArchive(["s"], [[0.25, 0.5, 0.75]])
    status = archive.add([0, 1, 2], ["a", "b", "c"], [0.2, 0.9, 0.4], [[0.1], [0.6], [0.9]], generation=0)
    assert status.tolist() == [NEW_CELL] * 3
    stats = archive.stats()
    assert stats["qd_score"] == pytest.approx(1.5)
    assert stats["coverage"] == pytest.approx(0.75)
    assert stats["num_elites"] == 3
    assert stats["max_quality"] == pytest.approx(0.9)
    assert stats["mean_quality"] == pytest.approx(0.5)


def test_empty_archive_stats_are_zero():
    stats = QDArchive(["s"], [[0.5]]).stats()
    assert stats == {"qd_score": 0.0, "coverage": 0.0, "num_elites": 0, "max_quality": 0.0, "mean_quality": 0.0}


def test_statuses_are_exact_within_a_batch_and_across_batches():
    archive = QDArchive(["s"], [[0.5]])
    # Two candidates for the same empty cell: only the better one holds it, so only it counts as new.
    status = archive.add([0, 1], ["weak", "strong"], [0.3, 0.8], [[0.1], [0.2]], generation=0)
    assert status.tolist() == [NOT_ADDED, NEW_CELL]
    status = archive.add([2, 3], ["worse", "better"], [0.5, 0.95], [[0.3], [0.4]], generation=1)
    assert status.tolist() == [NOT_ADDED, IMPROVED]
    elites = archive.elites()
    assert elites["text"].tolist() == ["better"] and elites["generation"].tolist() == [1]
    assert elites["measure_s"].tolist() == pytest.approx([0.4])


def test_snapshot_round_trip_restores_the_archive():
    archive = QDArchive(["g", "e"], [PUBLISHED_2D, PUBLISHED_2D])
    rng = np.random.default_rng(0)
    archive.add(np.arange(50), [f"t{i}" for i in range(50)], rng.random(50), rng.random((50, 2)), generation=3)
    restored = QDArchive.from_elites(["g", "e"], [PUBLISHED_2D, PUBLISHED_2D], archive.elites())
    assert restored.stats() == archive.stats()
    assert restored.elites().equals(archive.elites())
    grid = restored.quality_grid()
    assert grid.shape == (10, 10) and np.isfinite(grid).sum() == len(archive)
