"""Embedding judges: measures from where a text's MiniLM embedding lies between an axis's two poles."""

import numpy as np
import pytest

from evoforge.core.config import JudgeConfig, RunConfig, default_judges, judge_models
from evoforge.core.domain import load_domain
from evoforge.judges.embedding import pole_scores, with_poles
from evoforge.judges.measures import auc
from evoforge.judges.panel import fit_panel, judgements_per_text, questions


def test_poles_default_to_the_domain_description_and_each_label():
    stories = load_domain("stories")
    genre = questions(stories)["genre"]
    assert genre.poles == (f"{stories.description} This one is horror.", f"{stories.description} This one is romance.")
    assert questions(stories)["quality"].poles is None  # quality has no poles: embedding judges skip it
    own = genre.model_copy(update={"poles": ("A ghost story.", "A love story.")})
    assert with_poles(own, stories.description).poles == ("A ghost story.", "A love story.")


def test_an_embedding_judge_loads_no_generative_model():
    judges = default_judges() + [JudgeConfig(name="emb", kind="embedding", model="minilm")]
    assert judge_models(judges) == {"smollm2"}
    # The judge-call budget counts what is asked: 2 generative judges x 3 questions, the embedding judge x 2 axes.
    assert judgements_per_text(judges, questions(load_domain("stories"))) == 2 * 3 + 2
    assert RunConfig(domain="stories", judges=judges, combine="weighted").judges[-1].kind == "embedding"


def test_pole_scores_separate_the_references_that_a_small_generative_judge_cannot(embedder):
    """On `stories` SmolLM2 ranks genre backwards (README: AUC 0.30); MiniLM's poles rank it right. The bound is
    loose (MiniLM separates the 16 labelled stories completely), so another CPU's rounding cannot break it."""
    stories = load_domain("stories")
    references = stories.load_references()
    labelled = references["genre"].notna()
    texts = references.loc[labelled, "text"].tolist()
    scores = pole_scores("minilm", questions(stories)["genre"], texts)
    assert scores.shape == (len(texts),) and np.all((scores > 0) & (scores < 1))
    assert auc(scores, references.loc[labelled, "genre"].to_numpy(dtype=float)) > 0.9
    assert np.isnan(pole_scores("minilm", questions(stories)["quality"], texts)).all()


def test_a_panel_with_an_embedding_judge_calibrates_it_on_the_axes_only(backend):
    """`combine: auto` averages the judges by their evidence on the labels (bma): the blind generative judges get
    almost no say on genre, so the panel's genre score keeps the embedding judge's spread."""
    stories = load_domain("stories")
    judges = default_judges() + [JudgeConfig(name="emb", kind="embedding", model="minilm")]
    references = stories.load_references()
    panel = fit_panel({"smollm2": backend}, judges, questions(stories), "auto", references)
    assert panel.rules["quality"].calibrators[2].method == "none"
    assert panel.rules["genre"].calibrators[2].method == "platt"
    assert {rule.ensemble.method for rule in panel.rules.values()} == {"bma"}
    assert panel.rules["genre"].ensemble.weights[2] > 0.9
    scored = panel.judge({"smollm2": backend}, references["text"].tolist()[:4])
    assert "judge_emb_quality" not in scored and scored["quality"].notna().all()  # the LLMs decide quality
    assert scored["judge_emb_genre"].notna().all()
    report = panel.report.set_index(["question", "name"])
    assert report.loc[("genre", "emb"), "auc"] > 0.9


def test_a_bad_embedding_judge_call_says_what_is_wrong():
    stories = load_domain("stories")
    genre, ending = questions(stories)["genre"], questions(stories)["ending"]
    with pytest.raises(ValueError, match="one axis per call"):
        pole_scores("minilm", [genre, ending], ["a", "b"])


def test_combine_auto_is_the_mean_where_a_question_has_no_labels():
    panel = fit_panel({}, [JudgeConfig(name="chat0")], questions(load_domain("jaws")), "auto", None)
    assert {rule.ensemble.method for rule in panel.rules.values()} == {"mean"}
