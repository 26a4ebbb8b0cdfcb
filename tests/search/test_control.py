"""Perceptual control (`search: pct`): the loop's sign, its learned gains on a toy plant, its record and its plans."""

import numpy as np
import pandas as pd
import pytest

from evoforge.core.config import RunConfig
from evoforge.core.experts import Expert
from evoforge.search.control import (Controller, act, error, grid_position, landed, learn_gain, pct_metrics,
                                     reference, temperature)
from evoforge.search.generation import plan_candidates
from models.backend import SamplingSettings


def measures_at(domain, positions):
    """Grid positions back to measures (the inverse of `grid_position`), to write a toy plant's record."""
    positions = np.atleast_2d(positions)
    out = np.empty_like(positions, dtype=float)
    for j, axis in enumerate(domain.axes):
        edges = np.array([0.0, *axis.bins, 1.0])
        out[:, j] = np.interp(positions[:, j], np.arange(len(edges), dtype=float), edges)
    return out


def attempts(domain, cells, aims, perceived, generation, valid=True):
    """Record rows of attempts at `cells` with the given aims and perceived positions."""
    m = measures_at(domain, perceived)
    frame = pd.DataFrame({"generation": generation, "text": [f"g{generation}-{i}" for i in range(len(cells))],
                          "valid": valid, "quality": 0.9,
                          "pct_target": [list(c) for c in cells], "pct_aim": [list(a) for a in np.atleast_2d(aims)]})
    for j, a in enumerate(domain.axis_names):
        frame[f"measure_{a}"] = m[:, j]
    return frame


def test_grid_positions_count_bins_so_that_the_floor_is_the_archives_bin(opinions):
    measures = np.array([[0.0], [0.004], [0.0075], [0.35], [0.999], [1.0]])
    positions = grid_position(opinions, measures)[:, 0]
    assert positions[0] == 0 and positions[2] == pytest.approx(1.5)  # halfway between the edges 0.005 and 0.01
    assert positions[3] == pytest.approx(9.5)  # bin 9 is [0.2, 0.5)
    bins = np.digitize(measures[:, 0], opinions.axes[0].bins)
    assert np.floor(positions).astype(int).tolist() == bins.tolist()  # 1.0 too: the last bin, not a 21st
    assert reference((9,)).tolist() == [9.5]


def test_the_error_moves_the_aim_past_the_target_on_the_side_it_fell_short(opinions):
    target = (15,)
    low = Controller.from_record(opinions, attempts(opinions, [target] * 2, [[15.5]] * 2, [[10.0], [12.0]], 0))
    aim, err, cut = low.aim_for(target)
    assert err[0] == pytest.approx(15.5 - 11.0) and aim[0] > 15.5 and cut == 0  # landed low: aim higher
    high = Controller.from_record(opinions, attempts(opinions, [target] * 2, [[15.5]] * 2, [[18.0], [19.0]], 0))
    assert high.aim_for(target)[0][0] < 15.5  # landed high: aim lower
    assert error(reference(target), [[11.0]])[0, 0] > 0 > error(reference(target), [[18.0]])[0, 0]
    first, err, _ = low.aim_for((3,))  # a target never tried: aim at its centre, no error yet
    assert first.tolist() == [3.5] and np.isnan(err).all()


def test_only_the_targets_latest_judged_round_drives_the_next_aim(opinions):
    record = pd.concat([attempts(opinions, [(10,)], [[10.5]], [[4.0]], 0),
                        attempts(opinions, [(10,)], [[14.0]], [[10.0]], 1),
                        attempts(opinions, [(10,)], [[16.0]], [[0.0]], 2, valid=False)])  # unjudged: ignored
    state = Controller.from_record(opinions, record).targets[(10,)]
    assert state.aim.tolist() == [14.0] and state.error[0] == pytest.approx(0.5)


def test_an_aim_past_the_grids_edge_is_cut_and_raises_the_temperature():
    aim, cut = act(np.array([19.0]), np.array([3.0]), np.array([1.0]), (20,))
    assert aim.tolist() == [20.0] and cut == pytest.approx(2.0)
    assert temperature(0.8, cut, 0.5) == pytest.approx(1.2) and temperature(0.8, 0.0, 0.5) == 0.8
    assert temperature(0.8, cut) == 0.8  # off by default


def test_gains_start_at_one_and_converge_on_a_toy_linear_plant(opinions):
    """A plant that puts a text at 5 + 0.5 * aim (+ noise) needs gain 2; the loop learns it from its own attempts
    and brings each target's texts to its centre."""
    assert learn_gain(np.empty((0, 1)), np.empty((0, 1))).tolist() == [1.0]
    rng = np.random.default_rng(0)
    targets = [(6,), (10,), (13,)]
    record, gains = [], []
    for generation in range(12):
        controller = Controller.from_record(opinions, pd.concat(record) if record else None)
        gains.append(float(controller.gain[0]))
        aims = np.array([controller.aim_for(t)[0] for t in targets for _ in range(4)])
        perceived = np.clip(5 + 0.5 * aims + rng.normal(0, 0.4, aims.shape), 0, 19.99)
        record.append(attempts(opinions, [t for t in targets for _ in range(4)], aims, perceived, generation))
    assert gains[0] == 1.0 and 1.6 < gains[-1] < 2.5
    last = Controller.from_record(opinions, pd.concat(record))
    for t in targets:
        assert abs(last.targets[t].error[0]) < 0.8  # the last round (4 noisy texts) within a bin of the centre
    assert abs(last.aim_for((10,))[0][0] - 11.0) < 1.0  # the aim that puts texts at 10.5 on this plant


def test_examples_are_the_judged_texts_nearest_the_aim_above_the_quality_level(opinions):
    record = attempts(opinions, [(0,)] * 4, [[0.5]] * 4, [[2.2], [2.6], [9.0], [2.4]], 0)
    record["quality"] = [0.9, 0.9, 0.9, 0.1]
    controller = Controller.from_record(opinions, record, quality=0.5)
    texts = [t for t, _ in controller.examples(np.array([2.5]), 2, np.random.default_rng(0))]
    assert texts == ["g0-0", "g0-1"]  # nearest last; g0-3 is nearer than g0-0 but below the quality level
    wishes = [w for _, w in controller.examples(np.array([2.5]), 2, np.random.default_rng(0))]
    assert all(w.startswith("sentiment is") for w in wishes)


def test_pct_plans_carry_their_aim_error_and_gain(opinions):
    expert = Expert(0, "smollm2", SamplingSettings(temperature=0.9), "Write.", ["a", "b", "c"])
    record = attempts(opinions, [(0,), (19,)], [[0.5], [19.5]], [[5.0], [15.0]], 0)
    elites = pd.DataFrame({"cid": [0, 1], "text": ["x", "y"], "quality": [0.9, 0.9], "bin_sentiment": [5, 15],
                           "measure_sentiment": [0.04, 0.96]})
    plans = plan_candidates([expert], [0], 6, opinions, ["p1", "p2", "p3"], elites, 0.5,
                            np.random.default_rng(1), search="pct",
                            controller=Controller.from_record(opinions, record, temperature_gain=0.5))
    assert {p.mutation for p in plans} == {"pct"}
    for plan in plans:
        target = tuple(plan.control["pct_target"])
        assert plan.prompt.rstrip().endswith(":") and len(plan.genotype) == 3
        if target == (0,):  # landed at 5: aim below 0.5 is cut at the edge, so the temperature rises
            assert plan.control["pct_aim"] == [0.0] and plan.expert.sampling.temperature > 0.9
            assert plan.control["pct_error"] == [pytest.approx(-4.5)]



def test_metrics_count_hits_in_the_target_cell(opinions):
    frame = attempts(opinions, [(10,), (10,), (3,)], [[10.5]] * 3, [[10.2], [12.0], [3.9]], 0)
    frame["pct_gain"] = [[1.0]] * 3
    assert landed(opinions, frame).tolist() == [True, False, True]
    metrics = pct_metrics(opinions, frame)
    assert metrics["pct/hit_rate"] == pytest.approx(2 / 3)
    assert metrics["pct/mean_abs_error"] == pytest.approx((0.3 + 1.5 + 0.4) / 3)
    assert pct_metrics(opinions, frame.drop(columns=["pct_target"])) == {}


def test_pct_runs_one_population_only():
    with pytest.raises(ValueError, match="single-population"):
        RunConfig(search="pct", islands=2)


def test_a_fixed_cell_aims_every_target_and_pct_candidate_at_it(opinions):
    from evoforge.core.niches import niche_wish

    expert = Expert(0, "smollm2", SamplingSettings(temperature=0.9), "Write.", ["a", "b", "c"])
    wish = niche_wish(opinions, [7])
    for search in ("target", "pct"):
        plans = plan_candidates([expert], [0], 5, opinions, ["p1", "p2", "p3"], pd.DataFrame(), 0.5,
                                np.random.default_rng(2), search=search, cell=(7,))
        assert all(p.prompt.rstrip().endswith(f"one whose {wish}:") for p in plans)
