"""The value model on real Parquet: tests/data/opinions-s0-run is the run folder (candidate parts, archive
snapshots, seed pool) of a real `make run` (opinions, 8 generations x 16, seed 0, embedded models, bfloat16 on a
2-core Xeon, 2026-11-25)."""

from pathlib import Path

import numpy as np
import pytest

from evoforge.core.store import RunStore
from evoforge.steps.screening import EmbeddingMemo, targets_of, training_set
from models.value_model import CHEAP_FEATURES, Context, ValueModel, features, ngrams

RUN = RunStore(Path(__file__).resolve().parents[1] / "data" / "opinions-s0-run")


def test_cheap_features_follow_their_definitions():
    elite = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    context = Context(pool=["i love green peas"], elites=["broccoli is great"], elite_embeddings=elite)
    texts = ["i love green peas a lot", "nothing shared here"]
    vectors = np.array([[0.6, 0.8], [-1.0, 0.0]], dtype=np.float32)
    x = features(texts, vectors, context)
    cheap = dict(zip(CHEAP_FEATURES, x[:, 2:].T))
    assert x.shape == (2, 2 + len(CHEAP_FEATURES))
    np.testing.assert_allclose(cheap["log_words"], np.log1p([6, 3]))
    np.testing.assert_allclose(cheap["pool_overlap"], [3 / 5, 0.0])  # 3 of its 5 bigrams are in the pool
    np.testing.assert_allclose(cheap["elite_overlap"], [0.0, 0.0])
    np.testing.assert_allclose(cheap["nearest_elite_cosine"], [0.8, 0.0], atol=1e-6)
    assert ngrams("One two") == {("one", "two")} and ngrams("one") == set()
    empty = features(texts, vectors, Context())  # no elites yet: the nearest-elite cosine is 0, not an error
    assert (empty[:, -1] == 0).all()


@pytest.fixture(scope="module")
def data(embedder):
    return training_set(RUN, 8, ["sentiment"], EmbeddingMemo(embedder))


def test_training_set_is_every_judged_candidate_in_its_own_context(data):
    candidates = RUN.read_candidates(8)
    judged = candidates[candidates["valid"] & candidates["quality"].notna()]
    assert len(data.x) == len(judged) > 100
    assert sorted(data.cids) == sorted(judged["cid"])
    assert set(data.targets) == set(targets_of(["sentiment"])) == {"quality", "measure_sentiment"}
    by_cid = judged.set_index("cid")
    np.testing.assert_allclose(data.targets["quality"], by_cid.loc[data.cids, "quality"])
    # Generation 0 had no elites; later generations had, and their texts resemble them.
    nearest = data.x[:, -1]
    first = by_cid.loc[data.cids, "generation"].to_numpy() == 0
    assert (nearest[first] == 0).all() and (nearest[~first] > 0.2).mean() > 0.9


def test_value_model_beats_the_mean_on_held_out_rows(data):
    model = ValueModel().fit(data.x, data.targets, data.inserted, seed=0)
    err = model.heldout
    print("held-out:", {k: round(v, 3) for k, v in err.items()})
    assert err["heldout_rows"] == round(0.25 * len(data.x))
    # The measure (sentiment) is what the embedding carries most plainly: clearly better than the mean.
    assert err["mae_measure_sentiment"] < 0.85 * err["mae_measure_sentiment_baseline"]
    assert err["mae_quality"] < 1.1 * err["mae_quality_baseline"]
    predicted = model.predict(data.x[:5])
    assert set(predicted) == {"quality", "measure_sentiment", "p_insert"}
    assert ((predicted["p_insert"] > 0) & (predicted["p_insert"] < 1)).all()


def test_value_model_errors_are_clear():
    with pytest.raises(ValueError, match="at least 4 judged rows"):
        ValueModel().fit(np.zeros((2, 3)), {"quality": np.zeros(2)}, np.zeros(2))
    with pytest.raises(RuntimeError, match="fit"):
        ValueModel().predict(np.zeros((1, 3)))


def test_one_outcome_only_gives_its_rate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    model = ValueModel().fit(x, {"quality": x[:, 0]}, np.zeros(20))
    assert (model.predict(x)["p_insert"] == 0).all() and "auc_inserted" not in model.heldout
