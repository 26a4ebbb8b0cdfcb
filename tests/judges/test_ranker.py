"""The learned ranker (`selection: ranker`): pairwise fitting on toy features, held-out splits by task, and the
ranker fitted on the shipped labelled split as `ask` fits it."""

import numpy as np
import pandas as pd
import pytest

from evoforge.judges.ranker import fit_ranker, grouped_folds, ranking_pairs
from evoforge.judges.selection import Consensus, answer_features, fit_selector, load_labelled, select


def toy_tasks(seed: int, tasks: int = 40, answers: int = 4) -> pd.DataFrame:
    """Tasks where `task_cosine` is higher for the correct answers within each task, while `log_words` only moves
    with the task (tasks with long answers hold more correct ones: a pooled, pointwise fit would credit length)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(tasks):
        level = rng.uniform(0, 3)
        correct = rng.random(answers) < (0.2 + 0.2 * level)
        correct[0], correct[1] = True, False  # every task holds a pair
        for c in correct:
            rows.append({"group": t, "correct": int(c), "log_words": level + rng.normal(0, 0.05),
                         "task_cosine": (0.6 if c else 0.4) + rng.normal(0, 0.08)})
    return pd.DataFrame(rows)


def test_the_ranker_learns_the_within_task_signal_not_the_task_level():
    train, test = toy_tasks(0), toy_tasks(1)
    ranker = fit_ranker(train, train["correct"], train["group"])
    assert ranker.columns == ("task_cosine", "log_words")  # the present features, in RANKER_FEATURES order
    weights = ranker.coefficients()
    assert weights["task_cosine"] > 1.0 and abs(weights["log_words"]) < 0.5 * weights["task_cosine"]
    right = test.groupby("group").apply(lambda g: g["correct"].iloc[select("ranker", g.reset_index(drop=True),
                                                                           ranker=ranker)])
    assert right.mean() > 0.85  # a random pick is right about half the time
    assert ranker.pairs == len(ranking_pairs(np.zeros((len(train), 1)), train["correct"].to_numpy(),
                                             train["group"].to_numpy()))


def test_the_ranker_refuses_what_it_cannot_rank():
    train = toy_tasks(0)
    ranker = fit_ranker(train, train["correct"], train["group"])
    with pytest.raises(ValueError, match=r"lack the features \['log_words'\]"):
        ranker.score(train.drop(columns="log_words"))
    with pytest.raises(ValueError, match="ranker needs a ranker fitted"):
        select("ranker", train)
    one_kind = train.assign(correct=1)
    with pytest.raises(ValueError, match="both a correct and a wrong answer"):
        fit_ranker(one_kind, one_kind["correct"], one_kind["group"])
    with pytest.raises(ValueError, match="no ranker features"):
        fit_ranker(train[["group"]], train["correct"], train["group"])


def test_held_out_splits_are_by_task_and_seeded():
    groups = np.repeat(np.arange(10), 4)
    folds = grouped_folds(groups, 5, seed=3)
    assert np.array_equal(np.sum(folds, axis=0), np.ones(len(groups)))  # every answer held out exactly once
    for held in folds:
        assert not set(groups[held]) & set(groups[~held])  # no task on both sides
        assert len(set(groups[held])) == 2
    assert all(np.array_equal(a, b) for a, b in zip(folds, grouped_folds(groups, 5, seed=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, grouped_folds(groups, 5, seed=4)))
    with pytest.raises(ValueError, match="folds: expected 2 to 10"):
        grouped_folds(groups, 11, seed=0)


def test_answer_features_follow_seed_002():
    task = "Answer in one short sentence. What is the capital of France?"
    texts = ["Paris is the capital of France.", "Paris.", "Bananas are yellow fruit, rich in potassium."]
    embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    feats = answer_features(texts, task, embeddings, np.array([1.0, 0.0]))
    assert feats["task_cosine"].tolist() == pytest.approx([1.0, 0.8, 0.0])
    assert feats["peer_cosine"].tolist() == pytest.approx([0.4, 0.7, 0.3])
    assert feats["task_overlap"].iloc[0] > 0.5 and feats["task_overlap"].iloc[2] == 0.0
    assert feats["peer_overlap"].iloc[2] == 0.0 and feats["peer_overlap"].iloc[1] > 0  # only Paris is shared
    assert feats["log_words"].iloc[1] == pytest.approx(np.log(2))


def test_the_shipped_labelled_split_fits_the_ranker_as_ask_does(embedder):
    selector = fit_selector("ranker", Consensus("words", 0.2), load_labelled(), embedder)
    weights = selector.ranker.coefficients()
    assert set(weights) == {"task_cosine", "peer_cosine", "log_words", "task_overlap", "peer_overlap", "score",
                            "agreement"} and np.isfinite(list(weights.values())).all()
    assert weights["peer_overlap"] > 0  # agreeing with the other answers goes with being right
    texts = ["The capital of France is Lyon.", "Paris.", "It is Paris.", "Marseille, I think."]
    frame = selector.features(texts, "Answer in one short sentence. What is the capital of France?",
                              [0.9, 0.5, 0.5, 0.6], embedder=embedder)
    assert selector.pick(frame) in (1, 2)
