"""Selecting one answer among many: each method on hand-made answer sets whose right pick is known."""

import numpy as np
import pandas as pd
import pytest

from evoforge.core.config import TournamentConfig
from evoforge.judges.selection import (
    Consensus,
    agreement_reward,
    clusters,
    contains_answer,
    expert_weights,
    fit_selector,
    fit_stacker,
    load_labelled,
    select,
    short_answer,
    vote_forms,
    word_similarity,
)
from evoforge.steps.tournament import learn_values, select_answer

TASK = "Answer in one short sentence. What is the capital of France?"
# Three answers say Paris (the right one), two say Lyon; the judges like the fluent Lyon answers best.
ANSWERS = [
    "The capital of France is Lyon, a lovely and historic city.",
    "Paris.",
    "The capital of France is Paris.",
    "Lyon is the capital of France, a lovely city.",
    "It is Paris, of course.",
]
JUDGE_SCORES = [0.9, 0.3, 0.6, 0.8, 0.5]
RIGHT = [False, True, True, False, True]


def features(**extra) -> pd.DataFrame:
    frame = Consensus("words", 0.5).features(ANSWERS, TASK)
    frame["score"] = JUDGE_SCORES
    return frame.assign(**extra)


def test_short_answers_keep_only_what_the_answer_adds():
    assert short_answer("The capital of France is Paris.", TASK) == {"paris"}
    assert short_answer("It is Paris, of course.", TASK) == {"paris", "course"}
    assert short_answer("It is 1,000 meters.", "How many meters are in one kilometer?") == {"1,000"}
    similarity = word_similarity(ANSWERS, TASK)
    assert similarity[1, 2] == 1.0 and similarity[0, 2] == 0.0 and np.allclose(similarity, similarity.T)


def test_ground_truth_matches_whole_words_only():
    assert contains_answer("The capital of France is Paris.", ["Paris"])
    assert contains_answer("There are one hundred centimeters.", ["100", "one hundred"])
    assert not contains_answer("It is 120.", ["12"])  # a number inside another number is no match
    assert not contains_answer("Parisian food is good.", ["Paris"])
    assert contains_answer("A meter has 1,000 millimeters.", ["1,000"])


def test_clusters_put_the_largest_group_first():
    labels = clusters(word_similarity(ANSWERS, TASK), 0.5)
    assert labels[1] == labels[2] == labels[4] == 0  # the three Paris answers
    assert labels[0] == labels[3] != 0
    assert clusters(np.eye(3), 0.5).tolist() == [0, 1, 2]  # nobody agrees: each alone, in order


def test_judges_keep_the_best_scored_answer_even_when_wrong():
    assert select("judges", features()) == 0
    assert select("judges", features(score=[np.nan, 0.3, 0.6, np.nan, 0.5])) == 2  # unscored answers never win


def test_consensus_keeps_the_best_scored_answer_of_the_largest_cluster():
    assert select("consensus", features()) == 2  # Paris wins 3 to 2; among the Paris answers 0.6 is the best score
    without_judges = features().drop(columns="score")
    assert RIGHT[select("consensus", without_judges)]  # ties broken by centrality instead


def test_vote_keeps_the_most_common_short_answer():
    forms = vote_forms([*ANSWERS, "France."], TASK)
    # "Paris." and "The capital of France is Paris." vote for {paris}; "It is Paris, of course." for {paris,
    # course}; the two Lyon answers for different forms; "France." adds nothing to the task: no vote.
    assert forms[1] == forms[2] == 0 and len({forms[0], forms[3], forms[4]}) == 3 and forms[5] == -1
    assert select("vote", features(form=forms[:5])) == 2  # the {paris} voters, then the best judge score
    lyon = ["Lyon.", "It is Lyon.", "Paris."]
    assert vote_forms(lyon, TASK).tolist() == [0, 0, 1]  # a plurality of a wrong answer wins a vote, too
    nothing = features(form=[-1] * 5)
    assert select("vote", nothing) == select("consensus", nothing)  # no votes: the consensus pick


def test_weighted_vote_lets_trusted_experts_outweigh_a_larger_cluster():
    # Lyon's two answers come from trusted experts, Paris's three from distrusted ones.
    trusted = features(weight=[1.0, 0.1, 0.1, 1.0, 0.1])
    assert select("weighted", trusted) == 0  # Lyon weighs 0.9 + 0.8, Paris 0.03 + 0.06 + 0.05
    equal = features(weight=[1.0] * 5).drop(columns="score")
    assert select("weighted", equal) == select("consensus", equal)  # equal weights, no judges: the consensus
    assert select("weighted", features(weight=[1.0] * 5)) == 0  # judge-weighted: fluent Lyon 1.7, Paris 1.4
    with pytest.raises(ValueError, match="weighted needs each answer's expert weight"):
        select("weighted", features())
    assert expert_weights([0.0, 0.5, 1.0]).round(4).tolist() == [round(np.exp(-1), 4), round(np.exp(-0.5), 4), 1.0]
    assert expert_weights([0.3, 0.3]).tolist() == [1.0, 1.0]  # equal values: one vote each


def test_verifier_keeps_the_answer_most_likely_correct():
    assert select("verifier", features(verifier=[0.2, 0.7, 0.95, 0.1, 0.6])) == 2


def test_stacked_learns_which_feature_tells_right_from_wrong():
    # A labelled split where agreement, not the judges' score, goes with being right.
    rng = np.random.default_rng(0)
    n = 200
    correct = rng.random(n) < 0.5
    train = pd.DataFrame({"score": rng.uniform(0.2, 0.9, n),
                          "agreement": np.clip(np.where(correct, 0.7, 0.25) + rng.normal(0, 0.1, n), 0.01, 0.99),
                          "verifier": rng.uniform(0.3, 0.7, n)})
    stacker = fit_stacker(train, correct)
    assert select("stacked", features(verifier=[0.5] * 5), stacker) in (1, 2, 4)
    with pytest.raises(ValueError, match="stacked needs a model"):
        select("stacked", features(verifier=[0.5] * 5))
    with pytest.raises(ValueError, match="selection: unknown method 'best'"):
        select("best", features())


def test_selector_fits_verifier_and_stacked_on_a_labelled_split(tmp_path):
    groups = []
    for g in range(12):
        texts = ["Paris.", "It is Paris.", "Lyon.", "Nice is lovely."]
        groups.append(pd.DataFrame({"group": g, "task": TASK, "text": texts, "correct": [1, 1, 0, 0],
                                    "score": [0.4, 0.5, 0.9, 0.8], "verifier_raw": [0.6, 0.7, 0.5, 0.4]}))
    labelled = pd.concat(groups, ignore_index=True)
    selector = fit_selector("stacked", Consensus("words", 0.5), labelled)
    assert selector.stacker is not None and selector.calibrator.method == "platt"
    frame = selector.features(ANSWERS, TASK, JUDGE_SCORES, [0.4, 0.6, 0.7, 0.3, 0.6])
    assert RIGHT[selector.pick(frame)]
    assert fit_selector("consensus").stacker is None  # needs no labels
    with pytest.raises(FileNotFoundError, match="labelled split"):
        load_labelled(tmp_path / "missing.jsonl")


def test_experts_that_agree_with_the_kept_answer_gain_value():
    labels = clusters(word_similarity(ANSWERS, TASK), 0.5)
    assert agreement_reward(labels, 2).tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]
    judged = pd.DataFrame({"expert_id": [0, 1, 2, 3, 4], "cluster": labels})
    config = TournamentConfig(instruction="x")
    values = np.zeros(5)
    for _ in range(5):
        values = learn_values(config, values, judged, kept=2, row=0, reward=0.0, external=None)
    assert values[[1, 2, 4]].min() > values[[0, 3]].max()  # the experts that said Paris rank first
    only_selected = learn_values(config.model_copy(update={"value_signal": "reward"}), np.zeros(5), judged, 2, 2,
                                 0.7, None)
    assert np.flatnonzero(only_selected).tolist() == [2]


def test_exploration_starts_from_the_selections_pick():
    rng = np.random.default_rng(0)
    assert select_answer(np.array(JUDGE_SCORES), 0.0, rng, best=2) == (2, False)


@pytest.mark.slow
def test_embedding_consensus_groups_paraphrases(embedder):
    texts = ["Paris is the capital of France.", "The capital of France is Paris.", "I enjoy eating bananas."]
    frame = Consensus("embedding", 0.8).features(texts, TASK, embedder)
    assert frame["cluster"].tolist() == [0, 0, 1]
    assert select("consensus", frame) in (0, 1)


def run_ask_bench(folder, *options: str) -> dict:
    """`benchmarks/ask_bench.py --quick [options]` through the real models; its results file, read back."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "benchmarks" / "ask_bench.py"), "--quick", *options, "--out",
                    str(folder)], check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=1800)
    return json.loads(next(Path(folder).glob("*-ask-quick*.json")).read_text())


@pytest.mark.slow
def test_the_ask_benchmark_runs_and_reports_every_method(tmp_path):
    """`benchmarks/ask_bench.py --quick`: a few questions, a few experts, one seed, through the real models."""
    result = run_ask_bench(tmp_path)
    methods = {r["method"].split(" (")[0] for r in result["methods"]}
    assert {"single answer", "ceiling", "judges", "consensus", "verifier"} <= methods
    ceiling = next(r["mean"] for r in result["methods"] if r["method"].startswith("ceiling"))
    assert all(0 <= r["mean"] <= ceiling for r in result["methods"] if not r["method"].startswith("ceiling"))
    assert result["open_ended"] and "| selection | accuracy |" in result["markdown"]


@pytest.mark.slow
def test_the_moa_benchmark_compares_layers_with_one_layer_at_counted_tokens(tmp_path):
    """`benchmarks/moa_bench.py --quick`: a few questions through the real model in 3 layers and 3 one-layer
    repeats; every arm reports its counted tokens and each selection's accuracy (never above the ceiling)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(root / "benchmarks" / "moa_bench.py"), "--quick", "--threads", "1", "--out",
                    str(tmp_path)], check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=1800)
    result = json.loads(next(tmp_path.glob("*-moa-quick.json")).read_text())
    arms = {r["arm"]: r for r in result["arms"]}
    assert list(arms) == [*(f"1 layer x {r} answers each" for r in (1, 2, 3)), "2 layers", "3 layers"]
    one = arms["1 layer x 1 answers each"]["tokens_per_question"]
    assert arms["2 layers"]["tokens_per_question"] > one and arms["1 layer x 2 answers each"]["tokens_per_question"] > one
    for arm in arms.values():
        assert all(0 <= arm[m]["mean"] <= arm["ceiling"]["mean"] for m in ("single", "consensus", "vote", "weighted"))
    assert [r["layer"] for r in result["per_layer"]] == [1, 2, 3] and "| 2 layers |" in result["table"]


@pytest.mark.slow
def test_the_ask_benchmark_at_asks_answer_count_reports_only_the_consensus_methods(tmp_path):
    """`--repeats 2 --features consensus`: every expert answers twice, the judges and verifier never run, and the
    table holds only the methods that need neither (no rows of unmeasured methods)."""
    result = run_ask_bench(tmp_path, "--repeats", "2", "--features", "consensus", "--threads", "1", "--tag=-r2")
    assert [p.name.split("-ask")[1] for p in tmp_path.glob("*.json")] == ["-quick-r2.json"]
    assert result["settings"]["skipped_features"] == ["judges", "verifier"]
    assert result["timings"]["judges_s"] == result["timings"]["verifier_s"] == 0.0
    methods = [r["method"] for r in result["methods"]]
    assert methods[:2] == ["single answer (mean over answers)", "ceiling (some answer correct)"]
    assert all(m.startswith("consensus (") and m.endswith("most central") for m in methods[2:]) and len(methods) == 4
    # --quick: 3 experts x 2 repeats = 6 answers per question for every method but the single answer.
    assert [r["answers_per_question"] for r in result["methods"]] == [1, 6, 6, 6]
    assert [r["method"] for r in result["open_ended"]] == ["consensus"]
    assert not any(k.startswith(("judges", "verifier")) for k in result["feature_auc"])


def _ask_bench():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import ask_bench

    return ask_bench


def test_the_ask_benchmark_finds_an_experts_repeated_answers_by_their_row():
    """--answering K with --repeats: a subset's consensus reads each answer's own row of its task's similarity
    matrix (rows in (repeat, expert) order), not the row numbered like its expert."""
    ask_bench = _ask_bench()
    answers = pd.DataFrame({"seed": 0, "tid": 0, "repeat": [0, 0, 1, 1], "expert_id": [0, 1, 0, 1],
                            "position": range(4)})
    similarity = np.eye(4)
    similarity[1, 3] = similarity[3, 1] = 0.9  # expert 1 says the same twice; expert 0's two answers differ (0.0)
    found = {e: ask_bench.with_consensus_subset(answers[answers["expert_id"] == e], {(0, 0, "words"): similarity},
                                                "words", 0.5)
             for e in (0, 1)}
    assert found[0]["agreement"].tolist() == [0.0, 0.0] and found[1]["agreement"].tolist() == [1.0, 1.0]
    assert found[1]["centrality"].tolist() == pytest.approx([0.9, 0.9])


def test_the_ask_benchmark_refuses_a_cache_of_other_settings(tmp_path):
    """A cached seed collected with other repeats, or without the judges' features, is refused with the fix."""
    from types import SimpleNamespace

    ask_bench = _ask_bench()
    cached = pd.DataFrame({"expert_id": [0, 1, 0, 1], "repeat": [0, 0, 1, 1], "text": ["a", "b", "c", "d"]})
    ask_bench.check_cached(cached, tmp_path, SimpleNamespace(experts=2, repeats=2, features="consensus"))
    with pytest.raises(SystemExit, match="--repeats 3"):
        ask_bench.check_cached(cached, tmp_path, SimpleNamespace(experts=2, repeats=3, features="consensus"))
    with pytest.raises(SystemExit, match="without score, verifier_raw.*another --cache"):
        ask_bench.check_cached(cached, tmp_path, SimpleNamespace(experts=2, repeats=2, features="all"))


def test_the_shipped_labelled_split_fits_verifier_and_stacked():
    labelled = load_labelled()
    assert labelled["correct"].isin([0, 1]).all() and labelled["group"].nunique() >= 20
    selector = fit_selector("stacked", Consensus("words", 0.2), labelled)
    assert selector.stacker is not None and fit_selector("verifier").calibrator.method == "platt"
