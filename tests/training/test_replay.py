"""Prioritized replay's sampling (evoforge.training.replay): priorities, importance weights, seeded draws, and
the fine-tune data of a real run folder (tests/data/opinions-s0-run)."""

from pathlib import Path

import numpy as np
import pytest

from evoforge.core.archive import QDArchive
from evoforge.core.config import FinetuneConfig
from evoforge.core.domain import load_domain
from evoforge.core.store import RunStore
from evoforge.training.finetune_data import elite_examples, ever_elites
from evoforge.training.replay import EPS, advantage, draw_indices, prioritize, replay_examples

RUN = RunStore(Path(__file__).resolve().parents[1] / "data" / "opinions-s0-run")


def test_probabilities_and_importance_weights_follow_prioritized_replay():
    p = np.array([0.0, 0.2, 0.6, 1.0])
    r = prioritize(p, alpha=0.6, beta=0.4)
    expected = (p + EPS) ** 0.6 / ((p + EPS) ** 0.6).sum()
    np.testing.assert_allclose(r.probability, expected)
    w = (4 * expected) ** -0.4
    np.testing.assert_allclose(r.weight, w / w.max())
    assert r.weight[0] == 1.0 and np.all(np.diff(r.weight) < 0)  # the rarest draw weighs most
    np.testing.assert_allclose(r.draw, expected * w / (expected * w).sum())
    # alpha 0: uniform; beta 1: the correction undoes the priority entirely, beta 0: not at all.
    np.testing.assert_allclose(prioritize(p, 0.0, 0.4).probability, 0.25)
    np.testing.assert_allclose(prioritize(p, 0.6, 1.0).draw, 0.25)
    np.testing.assert_allclose(prioritize(p, 0.6, 0.0).draw, expected)
    with pytest.raises(ValueError, match="replay: priorities must be non-negative"):
        prioritize(np.array([0.5, -0.1]), 0.6, 0.4)


def test_draws_are_seeded_and_follow_the_distribution():
    q = prioritize(np.array([0.1, 0.3, 0.9]), 1.0, 0.0).draw
    a, b = draw_indices(q, 20_000, seed=3), draw_indices(q, 20_000, seed=3)
    assert (a == b).all() and not (a == draw_indices(q, 20_000, seed=4)).all()
    np.testing.assert_allclose(np.bincount(a, minlength=3) / len(a), q, atol=0.015)


@pytest.fixture(scope="module")
def run_data():
    domain = load_domain("opinions")
    candidates = RUN.read_candidates(8)
    archive = QDArchive.from_elites(domain.axis_names, [a.bins for a in domain.axes], RUN.read_elites(7))
    elites = ever_elites(candidates, archive)
    return domain, candidates, archive, elites


def test_uniform_replay_leaves_the_elites_as_they_were(run_data):
    domain, candidates, archive, elites = run_data
    examples = elite_examples(elites, domain)
    assert replay_examples(examples, elites, candidates, archive, FinetuneConfig()) is examples


def test_prioritized_replay_ranks_a_real_runs_elites(run_data):
    domain, candidates, archive, elites = run_data
    examples = elite_examples(elites, domain)
    by_quality = replay_examples(examples, elites, candidates, archive, FinetuneConfig(replay="prioritized"))
    assert np.isclose(by_quality["replay_draw"].sum(), 1.0) and by_quality["replay_probability"].between(0, 1).all()
    order = np.argsort(by_quality["quality"].to_numpy())
    assert np.all(np.diff(by_quality["replay_probability"].to_numpy()[order]) >= 0)  # better elites: drawn more
    settings = FinetuneConfig(replay="prioritized", replay_priority="advantage")
    by_advantage = replay_examples(examples, elites, candidates, archive, settings)
    gain = advantage(elites, candidates, archive)
    assert (gain >= 0).all() and (gain > 0).any()
    np.testing.assert_allclose(by_advantage["replay_priority"], gain)
    # By hand for one elite: its quality minus the mean quality of the judged candidates of its cell.
    judged = candidates[candidates["valid"] & candidates["quality"].notna()]
    cells = archive.cell_index(judged[[f"measure_{a}" for a in archive.axis_names]].to_numpy())
    i = int(np.argmax(gain))
    mean = judged["quality"].to_numpy()[cells == elites["cell"].iloc[i]].mean()
    assert gain[i] == pytest.approx(elites["quality"].iloc[i] - mean)


def test_replay_draws_stay_matched_to_their_examples(run_data, backend):
    from evoforge.training.finetuning import replay_ready

    domain, candidates, archive, elites = run_data
    plain = elite_examples(elites, domain)
    frame = replay_examples(plain, elites, candidates, archive, FinetuneConfig(replay="prioritized"))
    examples, draw = replay_ready(backend.tokenizer, frame, "text", 256)
    assert len(examples) == len(draw) == len(frame) and np.allclose(draw, frame["replay_draw"])
    uniform, none = replay_ready(backend.tokenizer, plain, "text", 256)
    assert none is None and [e.input_ids for e in uniform] == [e.input_ids for e in examples]
    # A row that tokenises to no loss-carrying token is dropped with its draw, so the rest stay matched.
    emptied = frame.copy()
    emptied.loc[0, "prompt"] = "word " * 400  # the prompt alone fills max_length: no completion token is left
    examples, draw = replay_ready(backend.tokenizer, emptied, "text", 256)
    assert len(examples) == len(frame) - 1 and np.allclose(draw, frame["replay_draw"].to_numpy()[1:])


def test_a_finished_runs_training_frame_carries_the_replay_it_asks_for(run_data, tmp_path):
    """`evoforge finetune --run R --replay prioritized` trains on what the run's own fine-tune would have drawn."""
    import shutil

    import pandas as pd

    from app.cli import build_parser, finetune_request
    from evoforge.training.finetuning import run_training_frame

    domain, candidates, archive, elites = run_data
    shutil.copy(RUN.root / "config.json", tmp_path / "config.json")
    candidates.to_parquet(tmp_path / "candidates.parquet")  # a finished run has its parts merged into this file
    settings = finetune_request(build_parser().parse_args(
        ["finetune", "--run", str(tmp_path), "--replay", "prioritized", "--replay-priority", "advantage"]))["settings"]
    got_domain, frame = run_training_frame(tmp_path, settings)
    expected = replay_examples(elite_examples(elites, domain), elites, candidates, archive, settings)
    assert got_domain.name == domain.name
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected.reset_index(drop=True))
    _, uniform = run_training_frame(tmp_path, FinetuneConfig())
    assert "replay_draw" not in uniform.columns and len(uniform) == len(frame)
    with pytest.raises(ValueError, match="--replay prioritized needs --run"):
        finetune_request(build_parser().parse_args(["finetune", "--data", "x.jsonl", "--replay", "prioritized"]))
