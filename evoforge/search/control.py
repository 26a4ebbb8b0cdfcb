"""Perceptual control (`search: pct`): a negative-feedback loop that steers generation into a chosen cell.

Seed 001's perception / conception / action loop, applied to evoforge's own control problem:

- reference: a target cell, as the centre of its bins on each axis, and a quality level (`reference`);
- perception: where the judges put what was just written for that target (`perceive`);
- error: reference minus perception, per axis (`error`);
- action: the next attempt at that target aims at `aim + gain * error` (`act`): its few-shot examples are the
  judged texts of the run nearest that aim (at or above the quality level), and its open line names the aim's
  niche. A first attempt aims at the reference; when its texts land short of the target, the next one aims past
  it by the error. The aim is an integrator (it keeps what earlier corrections did), clipped to the grid; where
  the grid's edge cuts the wanted aim, the examples can go no further (the sampling temperature may rise instead,
  `pct_temperature_gain`, off by default);
- learning: per axis, gain = 1 / slope of a running regression of the perceived position on the aimed position
  over all attempts so far (`learn_gain`; a prior slope of 1, so the gain starts at 1): if texts move half a bin
  per bin aimed, the loop learns to aim two bins per bin of error.

Positions are in grid coordinates, not raw measures: the published grids put most of their bins near 0 and 1, so
a measure is mapped to its bin index plus its place inside the bin (`grid_position`), where one step means one
cell anywhere on the grid.

The state (gains, each target's aim and last error) is a function of the run's record: the candidates with their
`pct_target`, `pct_aim` and measures (`Controller.from_record`), so a resumed run acts as the uninterrupted one.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evoforge.core.domain import Domain
from evoforge.core.niches import niche_wish
from evoforge.search.targeting import labelled_prompt

# Weight of the prior slope 1 in the gain regression, in the regression's own units (bins squared of aimed
# spread): as if two attempts one bin either side of the mean had moved exactly as aimed. A few real attempts
# outweigh it, and until then the loop acts as an untrained one would (gain 1).
PRIOR_WEIGHT = 2.0
# The learned slope is kept in this range: a judge that barely responds would otherwise make the gain (1 / slope)
# explode, and a negative slope (noise, early on) would turn the feedback positive.
MIN_SLOPE, MAX_SLOPE = 0.1, 4.0
# How much the sampling temperature rises (as a share) when the grid's edge cuts the wanted aim by one bin or more:
# the examples cannot lean further, so the loop could spread its samples to reach the tail. Off by default: at 0.5
# it made texts 25% longer and drift away from the extreme cells (README, "Perceptual control"); `pct_temperature_gain`.
TEMPERATURE_GAIN = 0.0
# Columns each attempt adds to candidates.parquet.
COLUMNS = ("pct_target", "pct_aim", "pct_error", "pct_gain", "pct_temperature")


def grid_position(domain: Domain, measures: np.ndarray) -> np.ndarray:
    """Measures (rows x axes, in [0, 1]) as grid coordinates: bin index plus the place inside the bin, so that
    `floor(position)` is the bin `np.digitize` gives (the archive's), and bins are one unit wide."""
    measures = np.atleast_2d(np.asarray(measures, dtype=float))
    out = np.empty_like(measures)
    for j, axis in enumerate(domain.axes):
        edges = np.array([0.0, *axis.bins, 1.0])
        out[:, j] = np.interp(measures[:, j], edges, np.arange(len(edges), dtype=float))
    # The top of the last bin (a measure of exactly 1) belongs to that bin, as in the archive.
    return np.minimum(out, np.array(domain.grid_shape, dtype=float) - 1e-9)


def reference(cell: tuple[int, ...]) -> np.ndarray:
    """The reference of a target cell: its centre in grid coordinates."""
    return np.asarray(cell, dtype=float) + 0.5


def perceive(domain: Domain, candidates: pd.DataFrame) -> np.ndarray:
    """Where the judges put the candidates (rows x axes, grid coordinates); NaN rows for unjudged ones."""
    return grid_position(domain, candidates[[f"measure_{a}" for a in domain.axis_names]].to_numpy(dtype=float))


def error(ref: np.ndarray, perceived: np.ndarray) -> np.ndarray:
    """Reference minus perception, per axis (positive: the texts landed below the target on that axis)."""
    return np.asarray(ref, dtype=float) - np.asarray(perceived, dtype=float)


def learn_gain(aims: np.ndarray, perceived: np.ndarray, prior_weight: float = PRIOR_WEIGHT) -> np.ndarray:
    """Per axis, 1 / the slope of perceived position on aimed position (least squares about the means, with a
    prior slope of 1 worth `prior_weight`), the slope clipped to [MIN_SLOPE, MAX_SLOPE]. With no attempts: 1."""
    aims, perceived = np.atleast_2d(aims).astype(float), np.atleast_2d(perceived).astype(float)
    if aims.size == 0:
        return np.ones(aims.shape[1] if aims.ndim == 2 else 1)
    da, dp = aims - aims.mean(axis=0), perceived - perceived.mean(axis=0)
    slope = (prior_weight + (da * dp).sum(axis=0)) / (prior_weight + (da * da).sum(axis=0))
    return 1.0 / np.clip(slope, MIN_SLOPE, MAX_SLOPE)


def act(aim: np.ndarray, err: np.ndarray, gain: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """The next aim, `aim + gain * error`, clipped to the grid; and how far (in bins, the most over the axes) the
    grid's edge cut it."""
    wanted = np.asarray(aim, dtype=float) + np.asarray(gain, dtype=float) * np.asarray(err, dtype=float)
    clipped = np.clip(wanted, 0.0, np.asarray(shape, dtype=float))
    return clipped, float(np.abs(wanted - clipped).max())


def temperature(base: float, cut: float, gain: float = TEMPERATURE_GAIN) -> float:
    """The attempt's sampling temperature: the expert's, raised by up to `gain` (a share) where the aim was cut."""
    return base * (1.0 + gain * min(cut, 1.0))


@dataclass(frozen=True)
class TargetState:
    """What the loop knows about one target: the aim of its last attempts and the error they left (NaN before
    any attempt at it was judged)."""

    aim: np.ndarray
    error: np.ndarray


@dataclass(frozen=True)
class Attempt:
    """One attempt at a target: the prompt, its examples (the genotype), the sampling temperature, and the row of
    `COLUMNS` it records."""

    prompt: str
    genotype: list[str]
    temperature: float
    columns: dict


@dataclass
class Controller:
    """The loop's state for one generation, rebuilt from the run's record (`from_record`)."""

    domain: Domain
    quality: float  # the reference quality level: examples are drawn from texts at or above it while enough are
    gain: np.ndarray  # per axis
    targets: dict = field(default_factory=dict)  # cell -> TargetState
    bank: pd.DataFrame = field(default_factory=pd.DataFrame)  # judged texts: text, quality, position_<axis>
    temperature_gain: float = TEMPERATURE_GAIN

    @classmethod
    def from_record(cls, domain: Domain, record: pd.DataFrame | None, quality: float = 0.5,
                    temperature_gain: float = TEMPERATURE_GAIN) -> "Controller":
        """The state after the attempts in `record` (earlier candidates: text, generation, valid, quality,
        measure_<axis>, and pct_target, pct_aim for the controlled ones)."""
        d = len(domain.axes)
        if record is None or len(record) == 0:
            return cls(domain, quality, np.ones(d), temperature_gain=temperature_gain)
        judged = record[record["valid"].astype(bool)].copy()
        judged = judged[judged[[f"measure_{a}" for a in domain.axis_names]].notna().all(axis=1)]
        positions = perceive(domain, judged) if len(judged) else np.empty((0, d))
        bank = pd.DataFrame({"text": judged["text"].to_numpy(), "quality": judged["quality"].to_numpy(dtype=float)})
        for j, a in enumerate(domain.axis_names):
            bank[f"position_{a}"] = positions[:, j]
        controlled = judged["pct_target"].notna().to_numpy() if "pct_target" in judged else np.zeros(len(judged), bool)
        if not controlled.any():
            return cls(domain, quality, np.ones(d), {}, bank, temperature_gain)
        rows, perceived = judged[controlled], positions[controlled]
        aims = np.stack([np.asarray(a, dtype=float) for a in rows["pct_aim"]])
        gain = learn_gain(aims, perceived)
        cells = [tuple(int(b) for b in t) for t in rows["pct_target"]]
        generations = rows["generation"].to_numpy()
        targets = {}
        for cell in dict.fromkeys(cells):
            mine = np.array([c == cell for c in cells])
            last = mine & (generations == generations[mine].max())  # the target's latest judged round
            targets[cell] = TargetState(aims[last].mean(axis=0), error(reference(cell), perceived[last].mean(axis=0)))
        return cls(domain, quality, gain, targets, bank, temperature_gain)

    def aim_for(self, cell: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, float]:
        """The next aim at `cell`, the error it acts on (NaN before any perception: it aims at the reference) and
        how far the grid's edge cut it."""
        state = self.targets.get(tuple(cell))
        if state is None:
            return reference(cell), np.full(len(cell), np.nan), 0.0
        aim, cut = act(state.aim, state.error, self.gain, self.domain.grid_shape)
        return aim, state.error, cut

    def examples(self, aim: np.ndarray, shots: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """The `shots` judged texts nearest the aim (ties in random order), from those at or above the quality
        level when there are enough of them, farthest first, each named by its own niche."""
        bank = self.bank
        if len(bank) == 0 or shots == 0:
            return []
        good = bank[bank["quality"] >= self.quality]
        bank = good if len(good) >= shots else bank
        names = [f"position_{a}" for a in self.domain.axis_names]
        positions = bank[names].to_numpy(dtype=float)
        distance = np.linalg.norm(positions - aim, axis=1)
        order = np.lexsort((rng.random(len(bank)), distance))[:shots][::-1]
        return [(str(bank["text"].iloc[i]), niche_wish(self.domain, list(self.cell_of(positions[i]))))
                for i in order]

    def cell_of(self, position: np.ndarray) -> tuple[int, ...]:
        """The cell a grid position lies in."""
        top = np.array(self.domain.grid_shape) - 1
        return tuple(int(b) for b in np.clip(np.floor(position), 0, top))

    def attempt(self, cell: tuple[int, ...], system_prompt: str, base_temperature: float, shots: int, pool: list[str],
                rng: np.random.Generator) -> Attempt:
        """One attempt at `cell`: examples nearest the aim (topped up with unnamed pool items while the run has
        judged too few texts), an open line naming the aim's niche, and the temperature for the aim's cut."""
        g = self.domain.generator
        aim, err, cut = self.aim_for(cell)
        examples = self.examples(aim, shots, rng)
        missing = shots - len(examples)
        if missing > 0:
            picks = rng.choice(len(pool), size=missing, replace=len(pool) < missing)
            examples = [(pool[int(i)], None) for i in picks] + examples
        wish = niche_wish(self.domain, list(self.cell_of(aim)))
        prompt = labelled_prompt(system_prompt, g.template, examples, wish, g.separator)
        temp = temperature(base_temperature, cut, self.temperature_gain)
        columns = {"pct_target": [int(c) for c in cell], "pct_aim": aim.tolist(), "pct_error": err.tolist(),
                   "pct_gain": self.gain.tolist(), "pct_temperature": temp}
        return Attempt(prompt, [text for text, _ in examples], temp, columns)


def landed(domain: Domain, candidates: pd.DataFrame) -> np.ndarray:
    """Per candidate: whether it is valid and in its `pct_target` cell."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=bool)
    bins = np.floor(perceive(domain, candidates))
    targets = np.stack([np.asarray(t, dtype=float) for t in candidates["pct_target"]])
    return candidates["valid"].to_numpy(dtype=bool) & (bins == targets).all(axis=1)


def pct_metrics(domain: Domain, candidates: pd.DataFrame) -> dict[str, float]:
    """A generation's loop metrics: the mean absolute error its attempts left (bins, mean over axes, judged
    attempts), the share of attempts that landed in their target cell, and the gains they used."""
    controlled = candidates[candidates["pct_target"].notna()] if "pct_target" in candidates else candidates.iloc[:0]
    if len(controlled) == 0:
        return {}
    judged = controlled[controlled["valid"].astype(bool)]
    metrics = {"pct/hit_rate": float(landed(domain, controlled).mean())}
    if len(judged):
        targets = np.stack([reference(tuple(t)) for t in judged["pct_target"]])
        metrics["pct/mean_abs_error"] = float(np.abs(error(targets, perceive(domain, judged))).mean())
    gains = np.stack([np.asarray(g, dtype=float) for g in controlled["pct_gain"]])
    metrics.update({f"pct/gain/{a}": float(gains[:, j].mean()) for j, a in enumerate(domain.axis_names)})
    return metrics
