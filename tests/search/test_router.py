"""The router: per-input expert credit that spreads to nearby inputs (evoforge.search.router)."""

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from evoforge.core.config import RunConfig
from evoforge.core.domain import load_domain
from evoforge.search.router import (Router, kernel_credit, niche_coordinates, router_plans, routing_metrics,
                                    run_router)

SHAPE = (20,)  # opinions' grid


def toy_history(rng: np.random.Generator, rounds: int = 200) -> pd.DataFrame:
    """Credited picks on a 20-cell axis: expert 0 earns 1 in the low cells (0-9) and 0 in the high ones, expert 1
    the opposite, expert 2 earns 0.3 everywhere; each pick a random cell and a random expert."""
    niches = rng.integers(0, 20, rounds)
    experts = rng.integers(0, 3, rounds)
    reward = np.where(experts == 2, 0.3, np.where((niches < 10) == (experts == 0), 1.0, 0.0))
    return pd.DataFrame({"router_niche": niches, "router_expert": experts, "router_score": 0.0,
                         "router_reward": reward})


def test_experts_that_win_different_cells_are_routed_apart():
    router = run_router(toy_history(np.random.default_rng(0)), 3, SHAPE, bandwidth=1.0)
    best = router.best(niche_coordinates(np.arange(20), SHAPE))
    assert (best[:9] == 0).all() and (best[11:] == 1).all()  # away from the boundary between 9 and 10
    rng = np.random.default_rng(1)
    low = [router.route(niche_coordinates([2], SHAPE), 1, 0.0, rng)[0][0] for _ in range(20)]
    high = [router.route(niche_coordinates([17], SHAPE), 1, 0.0, rng)[0][0] for _ in range(20)]
    assert set(low) == {0} and set(high) == {1}
    # One value per expert (what epsilon-greedy keeps) cannot tell them apart: both average about 0.5.
    overall = kernel_credit(router.inputs, router.experts, router.rewards, np.zeros((1, 1)), 3, bandwidth=1e6)[0][0]
    assert abs(overall[0] - overall[1]) < 0.2


def test_neighbouring_niches_share_credit_and_far_ones_do_not():
    # Expert 1 earned 1 in cell 5 and 0 in cell 15; expert 0 earned 0.5 in the end cells 0 and 19.
    inputs = niche_coordinates([5, 15, 0, 19], SHAPE)
    experts, rewards = np.array([1, 1, 0, 0]), np.array([1.0, 0.0, 0.5, 0.5])
    queries = niche_coordinates([5, 6, 7, 10, 14], SHAPE)
    scores, weight = kernel_credit(inputs, experts, rewards, queries, 2, bandwidth=1.0, prior=0.1)
    assert scores[0, 1] > scores[1, 1] > scores[2, 1] > scores[3, 1] > scores[4, 1]  # fading with distance
    assert scores[1, 1] > 0.9 > scores[1, 0]  # cell 6 goes to expert 1 on cell 5's credit
    assert scores[4, 1] < 0.1 < scores[4, 0]  # cell 14 to expert 0, on cell 15's
    assert scores[3, 1] == pytest.approx(0.5, abs=0.01)  # cell 10: no credit near, the overall mean
    assert weight[1, 1] == pytest.approx(np.exp(-0.5))  # one bin away weighs 0.61
    assert weight[3, 1] < 1e-5
    narrow = kernel_credit(inputs, experts, rewards, queries, 2, bandwidth=0.1, prior=0.1)
    assert narrow[1][1, 1] < 1e-20 and narrow[0][1, 1] == pytest.approx(0.5)  # a narrow kernel shares nothing


def test_no_credit_means_ties_broken_at_random():
    router = run_router(pd.DataFrame(columns=["router_niche", "router_expert", "router_reward"]), 4, SHAPE, 1.0)
    rng = np.random.default_rng(0)
    picks = {router.route(niche_coordinates([3], SHAPE), 1, 0.0, rng)[0][0] for _ in range(60)}
    assert picks == {0, 1, 2, 3}


def test_a_removed_experts_and_uncredited_picks_are_ignored():
    history = toy_history(np.random.default_rng(2), 50)
    history.loc[0, "router_reward"] = np.nan  # picked, not yet credited
    router = run_router(history, 2, SHAPE, 1.0)  # expert 2 no longer exists
    assert len(router.experts) == int(((history["router_expert"] < 2) & history["router_reward"].notna()).sum())


def test_router_plans_are_seeded_and_aim_each_candidate_at_its_niche():
    from evoforge.core.experts import SamplingRanges, random_experts

    domain = load_domain("opinions")
    pool = domain.load_pool()
    experts = random_experts(3, ["smollm2"], SamplingRanges(), domain.generator.system_prompts, pool,
                             np.random.default_rng(0))
    router = run_router(toy_history(np.random.default_rng(0)), 3, domain.grid_shape, 1.0)
    elites = pd.DataFrame(columns=["text", "quality", "bin_sentiment"])

    def plans(seed, epsilon=0.0):
        return router_plans(router, experts, 12, domain, pool, elites, 3, epsilon, np.random.default_rng(seed))

    (first, columns), (again, same) = plans(5), plans(5)
    assert columns == same and [p.prompt for p in first] == [p.prompt for p in again]
    assert [p.expert.expert_id for p in first] == columns["router_expert"]
    # Empty archive: targets are the two extreme cells; the low one goes to expert 0, the high one to expert 1.
    niches, picked = np.array(columns["router_niche"]), np.array(columns["router_expert"])
    assert set(niches) == {0, 19} and (picked == np.where(niches == 0, 0, 1)).all()
    assert columns != plans(6)[1]
    explored = np.array(plans(5, epsilon=1.0)[1]["router_expert"])  # all exploring: every expert writes
    assert set(explored) == {0, 1, 2}


def test_routing_metrics():
    router = run_router(toy_history(np.random.default_rng(0)), 3, SHAPE, 1.0)
    picks = pd.DataFrame({"router_niche": [1, 2, 18, 19], "router_expert": [0, 0, 1, 1],
                          "router_reward": [1.0, 1.0, 1.0, 0.0]})
    metrics = routing_metrics(router, picks, SHAPE)
    assert metrics["router/best_share"] == 1.0 and metrics["router/specialists"] == 2.0
    assert metrics["router/entropy"] == pytest.approx(np.log(2) / np.log(3))
    assert metrics["router/reward"] == 0.75
    lopsided = routing_metrics(router, picks.assign(router_expert=2), SHAPE)
    assert lopsided["router/entropy"] == 0.0 and lopsided["router/best_share"] == 0.0


def test_router_config_is_checked():
    assert RunConfig().gating.policy == "epsilon"  # today's gating by default
    with pytest.raises(ValidationError, match="gating.policy: the router runs in single-population runs"):
        RunConfig(gating={"policy": "router"}, manager={"enabled": True})
    with pytest.raises(ValidationError) as bad:
        RunConfig(gating={"policy": "routed"})
    assert bad.value.errors()[0]["loc"] == ("gating", "policy")
    assert isinstance(Router(2, np.zeros((0, 1)), np.zeros(0), np.zeros(0)).scores(np.zeros((1, 1))), np.ndarray)


# --- ask: tasks routed by their embedding ----------------------------------------------------------------------------


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def test_ask_routes_a_task_to_the_experts_credited_on_similar_tasks(tmp_path):
    from evoforge.core.experts import pick_experts
    from evoforge.steps.ask_routing import append_credit, credit_path, routed_scores

    population = tmp_path / "tournament" / "experts.parquet"
    rng = np.random.default_rng(0)
    # Toy 8-d embeddings: 'arithmetic' tasks near axis 0, 'capitals' near axis 1. Expert 0 agrees with the kept
    # answer on arithmetic, expert 1 on capitals, expert 2 half the time on both, expert 3 never answered.
    for i in range(12):
        kind = i % 2
        embedding = unit(np.eye(8)[kind] + 0.15 * rng.normal(size=8))
        credit = pd.Series({0: float(kind == 0), 1: float(kind == 1), 2: 0.5})
        rows = append_credit(credit_path(population), f"task {i}", embedding, credit)
    assert len(rows) == 36 and pd.read_parquet(credit_path(population)).shape[0] == 36  # one row per expert and task
    arithmetic, capitals = unit(np.eye(8)[0] + 0.1), unit(np.eye(8)[1] + 0.1)
    a = routed_scores(str(population), arithmetic, 4, bandwidth=0.5)
    c = routed_scores(str(population), capitals, 4, bandwidth=0.5)
    assert np.argmax(a) == 0 and np.argmax(c) == 1
    assert a[0] > 0.8 > 0.2 > a[1] and c[1] > 0.8 and a[3] == c[3] == 0.0  # no credit: 0
    top2 = sorted(pick_experts(a, 2, 0.0, np.random.default_rng(0)))
    assert top2 == [0, 2]  # the two best for arithmetic; expert 1, right on capitals, does not answer
    # Values (one number per expert, what routing 'none' picks by) see 0 and 1 as equal: 0.5 each.
    assert routed_scores(str(population), arithmetic, 4, bandwidth=100.0)[:2] == pytest.approx([0.5, 0.5], abs=0.02)
    # A new population file starts without credit: ties everywhere.
    assert (routed_scores(str(tmp_path / "other" / "experts.parquet"), arithmetic, 4, 0.5) == 0).all()


def test_ask_credit_is_agreement_with_the_kept_answer():
    from evoforge.judges.selection import Consensus
    from evoforge.steps.ask_routing import agreement_credit

    answers = pd.DataFrame({"expert_id": [0, 1, 2, 0], "text": ["The capital of France is Paris.", "Paris.",
                                                                 "It is Lyon.", "Marseille, I think."]})
    credit = agreement_credit(Consensus("words", 0.2), "What is the capital of France?", answers, "Paris.")
    assert credit.to_dict() == {0: 0.5, 1: 1.0, 2: 0.0}


def test_ask_routing_config_is_checked():
    from evoforge.core.config import TournamentConfig

    assert TournamentConfig(instruction="x").routing == "none"
    with pytest.raises(ValidationError) as bad:
        TournamentConfig(instruction="x", routing="gate")
    assert bad.value.errors()[0]["loc"] == ("routing",)
