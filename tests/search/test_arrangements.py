"""Evolving arrangements: the mutation and crossover of whole experts, and culling (evoforge.search.arrangements)."""

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from evoforge.core.config import ArrangementsConfig, RunConfig
from evoforge.core.experts import Expert, SamplingRanges, random_experts
from evoforge.search.arrangements import (CONTINUOUS, PARTS, arrangement_metrics, crossover_experts, cull, cull_due,
                                          mutate_expert, next_expert_id, window_values)
from models.backend import SamplingSettings

RANGES = SamplingRanges(temperature=(0.7, 1.2), top_p=(0.8, 1.0), frequency_penalty=(0.0, 0.5),
                        presence_penalty=(0.0, 0.5), max_new_tokens=(48, 64))
PERSONAS = ["p0", "p1", "p2"]
BACKENDS = ["m0", "m1"]
POOL = [f"item {i}" for i in range(20)]


def population(n=4, seed=0) -> list[Expert]:
    return random_experts(n, BACKENDS, RANGES, PERSONAS, POOL, np.random.default_rng(seed))


def parts(expert: Expert) -> dict:
    return {name: getattr(expert.sampling, name) if name in asdict(expert.sampling) else getattr(expert, name)
            for name in PARTS}


def test_mutation_stays_inside_the_ranges_even_at_the_edges():
    edge = Expert(0, "m0", SamplingSettings(1.2, 1.0, 0.0, 0.5, 64), "p0", ["a", "b", "c"])
    rng = np.random.default_rng(0)
    for _ in range(300):
        child = mutate_expert(edge, RANGES, PERSONAS, BACKENDS, POOL, rng, scale=1.0)
        for name in CONTINUOUS:
            lo, hi = getattr(RANGES, name)
            assert lo <= getattr(child.sampling, name) <= hi, name
        assert 48 <= child.sampling.max_new_tokens <= 64
        assert child.system_prompt in PERSONAS and child.backend in BACKENDS and len(child.genotype) == 3


def test_mutation_swaps_persona_backend_and_an_item_about_as_often_as_its_scale():
    parent = population(1)[0]
    rng = np.random.default_rng(1)
    children = [mutate_expert(parent, RANGES, PERSONAS, BACKENDS, POOL, rng, scale=0.3) for _ in range(1000)]
    personas = np.mean([c.system_prompt != parent.system_prompt for c in children])
    backends = np.mean([c.backend != parent.backend for c in children])
    items = np.mean([c.genotype != parent.genotype for c in children])
    assert 0.22 < personas < 0.38 and 0.22 < backends < 0.38 and 0.2 < items < 0.38
    assert np.mean([c.sampling.temperature != parent.sampling.temperature for c in children]) > 0.9
    # Small steps: the Gaussian's sd is 0.3 x the range (0.15 for temperature), so most moves are small.
    moves = np.abs([c.sampling.temperature - parent.sampling.temperature for c in children])
    assert np.median(moves) < 0.15
    assert parent.genotype == population(1)[0].genotype  # the parent is not changed
    # With one choice there is nothing to swap to.
    single = mutate_expert(parent, RANGES, [parent.system_prompt], [parent.backend], POOL, rng, scale=1.0)
    assert single.system_prompt == parent.system_prompt and single.backend == parent.backend


def test_crossover_takes_each_part_from_one_parent_and_mixes_them():
    a, b = Expert(0, "m0", SamplingSettings(0.7, 0.8, 0.0, 0.0, 48), "p0", ["a"]), \
        Expert(1, "m1", SamplingSettings(1.2, 1.0, 0.5, 0.5, 64), "p1", ["b"])
    rng = np.random.default_rng(2)
    from_a = {name: 0 for name in PARTS}
    for _ in range(400):
        child = crossover_experts(a, b, rng)
        for name, value in parts(child).items():
            assert value in (parts(a)[name], parts(b)[name]), name
            from_a[name] += value == parts(a)[name]
    assert all(120 < n < 280 for n in from_a.values()), from_a  # uniform: each part ~200 of 400 from a


def test_operators_are_deterministic_under_a_seed():
    a, b = population(2, seed=3)

    def children(seed):
        rng = np.random.default_rng(seed)
        return [mutate_expert(crossover_experts(a, b, rng), RANGES, PERSONAS, BACKENDS, POOL, rng, 0.5)
                for _ in range(5)]

    assert children(7) == children(7)
    assert children(7) != children(8)


def history_of(values: dict[int, list[float]]) -> pd.DataFrame:
    """Rows (generation, expert_id, value): `values[id][g]` for generations 0.. (None: not alive then)."""
    return pd.DataFrame([{"generation": g, "expert_id": i, "value": v}
                         for i, vs in values.items() for g, v in enumerate(vs) if v is not None])


def with_values(experts: list[Expert], history: pd.DataFrame) -> list[Expert]:
    last = history[history["generation"] == history["generation"].max()].set_index("expert_id")["value"]
    return [Expert(**{**e.__dict__, "value": float(last[e.expert_id])}) for e in experts]


SETTINGS = ArrangementsConfig(evolve=True, cull_every=2, cull=1, window=2, mutation_scale=0.3, crossover_rate=0.5)


def test_cull_removes_the_lowest_value_over_the_window_not_the_lowest_now():
    # Expert 2 is lowest now but was high in the window's first generation; expert 1 is low over the window.
    history = history_of({0: [0.0, 0.9, 0.9], 1: [0.9, 0.3, 0.3], 2: [0.9, 0.9, 0.1], 3: [0.5, 0.5, 0.5]})
    assert window_values(history, 2, 2).to_dict() == pytest.approx({0: 0.9, 1: 0.3, 2: 0.5, 3: 0.5})
    experts = with_values(population(), history)
    result = cull(experts, history, 2, SETTINGS, RANGES, PERSONAS, BACKENDS, POOL, np.random.default_rng(0),
                  next_id=4)
    assert [e.expert_id for e in result.culled] == [1]
    assert [e.expert_id for e in result.experts] == [0, 2, 3, 4]
    child = result.children[0]
    # Children descend from the best two over the window: expert 0 (0.9), then the tie 2 / 3 (0.5) goes to 3,
    # the younger: ties cull the older and keep the younger.
    assert set(child.parent_ids) <= {0, 3} and child.born == 3 and child.picks == 0
    assert child.value == max(e.value for e in experts)  # valued like the best, so the policy tries it soon


def test_children_descend_from_the_best_get_unique_ids_and_are_deterministic():
    history = history_of({0: [0.1, 0.1], 1: [0.8, 0.9], 2: [0.0, 0.0], 3: [0.7, 0.6], 4: [0.2, 0.2], 5: [0.5, 0.5]})
    experts = with_values(population(6), history)
    settings = ArrangementsConfig(evolve=True, cull_every=2, cull=3, window=2, mutation_scale=0.3, crossover_rate=0.5)
    results = [cull(experts, history, 1, settings, RANGES, PERSONAS, BACKENDS, POOL, np.random.default_rng(s), 9)
               for s in range(20)]
    for result in results:
        assert sorted(e.expert_id for e in result.culled) == [0, 2, 4]
        assert [c.expert_id for c in result.children] == [9, 10, 11]
        assert len({e.expert_id for e in result.experts}) == 6
        for child in result.children:
            assert set(child.parent_ids) <= {1, 3} and 1 <= len(child.parent_ids) <= 2
    assert any(len(c.parent_ids) == 2 for r in results for c in r.children)  # crossovers happen
    assert any(len(c.parent_ids) == 1 for r in results for c in r.children)  # and mutated copies
    again = cull(experts, history, 1, settings, RANGES, PERSONAS, BACKENDS, POOL, np.random.default_rng(3), 9)
    assert again == results[3]
    assert next_expert_id(history, again.experts) == 12 and next_expert_id(history.iloc[:0], []) == 0


def test_without_crossover_every_child_is_a_mutated_copy_of_one_of_the_best():
    history = history_of({0: [0.1], 1: [0.8], 2: [0.3]})
    experts = with_values(population(3), history)
    settings = ArrangementsConfig(evolve=True, cull_every=1, cull=2, window=1, crossover_rate=0.0)
    result = cull(experts, history, 0, settings, RANGES, PERSONAS, BACKENDS, POOL, np.random.default_rng(0), 3)
    assert [c.parent_ids for c in result.children] == [[1], [1]] and [e.expert_id for e in result.experts] == [1, 3, 4]


def test_culls_fall_after_every_cull_every_generations_and_only_when_evolving():
    assert [g for g in range(8) if cull_due(SETTINGS, g)] == [1, 3, 5, 7]
    assert not any(cull_due(ArrangementsConfig(), g) for g in range(8))


def test_arrangement_metrics_measure_the_population():
    experts = population(4)
    metrics = arrangement_metrics(experts, experts[:1])
    assert metrics["arrangements/culled"] == 1
    assert metrics["arrangements/std_temperature"] == pytest.approx(np.std([e.sampling.temperature for e in experts]))
    assert metrics["arrangements/backends"] == 2


@pytest.mark.parametrize("settings, message", [
    (dict(experts=4, arrangements=dict(evolve=True, cull=4)), "arrangements.cull: culling 4 of 4"),
    (dict(experts=3, arrangements=dict(evolve=True, cull=2)), "arrangements.crossover_rate: a crossover needs two"),
    (dict(generations=2, arrangements=dict(evolve=True, cull_every=2)), "arrangements.cull_every"),
    (dict(islands=2, arrangements=dict(evolve=True)), "single-population runs only"),
    (dict(manager=dict(enabled=True), arrangements=dict(evolve=True)), "manager picks"),
    (dict(gating=dict(policy="router"), arrangements=dict(evolve=True)), "router's per-niche credit"),
])
def test_settings_that_make_no_sense_are_refused_naming_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**settings)
    RunConfig(**{**settings, "arrangements": {**settings["arrangements"], "evolve": False}})  # off: accepted


def test_lineage_round_trips_through_a_row():
    child = Expert(7, "m0", SamplingSettings(), "p0", ["a"], value=0.5, picks=2, parent_ids=[1, 3], born=4)
    assert Expert.from_row(child.to_row()) == child
    old = {k: v for k, v in child.to_row().items() if k not in ("parent_ids", "born")}  # a row from before lineage
    assert Expert.from_row(old).parent_ids == [] and Expert.from_row(old).born == 0


# --- culling in a run: the run folder's record, and resuming ------------------------------------------------------


def fake_generation(state, generation: int):
    """A generation's outcome without models: each expert's value moves by a reward drawn from its id and the
    generation (so some experts do better than others), and one candidate per expert, every other one inserted."""
    from dataclasses import replace

    from evoforge.steps.evolution import ArchiveOutcome

    experts = [replace(e, value=e.value + float(np.random.default_rng([generation, e.expert_id]).uniform(-1, 1)),
                       picks=e.picks + 1) for e in state.experts]
    candidates = pd.DataFrame({"cid": np.arange(state.next_cid, state.next_cid + len(experts)),
                               "generation": generation, "expert_id": [e.expert_id for e in experts],
                               "text": [f"text {generation}-{e.expert_id}" for e in experts],
                               "inserted": [i % 2 == 0 for i in range(len(experts))]})
    return ArchiveOutcome(candidates, experts)


def run_generations(state, generations):
    from evoforge.steps.arrangements import cull_experts
    from evoforge.steps.evolution import commit_generation

    for g in generations:
        outcome = cull_experts(state, fake_generation(state, g), g)
        commit_generation(state, g, outcome, state.archive.stats(), None)


def test_a_run_records_lineage_and_a_resumed_run_culls_as_the_uninterrupted_one(tmp_path):
    from evoforge.steps.evolution import prepare_run

    arrangements = dict(evolve=True, cull_every=2, cull=2, window=3, crossover_rate=0.5)
    straight = prepare_run(RunConfig(experts=4, generations=8, out=str(tmp_path), run_name="straight",
                                     arrangements=arrangements))
    run_generations(straight, range(8))
    cut = RunConfig(experts=4, generations=8, out=str(tmp_path), run_name="cut", arrangements=arrangements)
    run_generations(prepare_run(cut), range(5))  # stopped after generation 4, then resumed from its run folder
    resumed = prepare_run(cut)
    assert resumed.completed == 5
    run_generations(resumed, range(5, 8))
    assert resumed.experts == straight.experts and resumed.pool == straight.pool
    rows = pd.read_parquet(tmp_path / "straight" / "experts.parquet")
    assert rows.drop(columns="generation").equals(
        pd.read_parquet(tmp_path / "cut" / "experts.parquet").drop(columns="generation"))

    # The lineage: culls after generations 1, 3, 5, 7, two each; the culled keep their last row.
    culled = rows[rows["culled"].notna()]
    assert sorted(culled["culled"].tolist()) == [1, 1, 3, 3, 5, 5, 7, 7]
    assert (culled["generation"] == culled["culled"]).all()
    assert culled["expert_id"].is_unique  # an expert is culled once, and its id is never used again
    living = rows[rows["culled"].isna()]
    assert (living.groupby("generation").size() == 4).all()
    first = rows.groupby("expert_id").agg(first=("generation", "min"), born=("born", "first"))
    children = rows[rows["expert_id"] >= 4].drop_duplicates("expert_id")
    assert children["expert_id"].tolist() == list(range(4, 12))
    for child in children.itertuples():
        assert child.born in (2, 4, 6, 8) and first.loc[child.expert_id, "first"] == child.born - 1
        parents = list(child.parent_ids)
        assert 1 <= len(parents) <= 2
        for parent in parents:  # a parent lived, and was not culled, in the generation its child was made after
            made_after = rows[(rows["generation"] == child.born - 1) & (rows["expert_id"] == parent)]
            assert len(made_after) == 1 and made_after["culled"].isna().all()
    founders = rows[rows["expert_id"] < 4]
    assert (founders["born"] == 0).all() and all(len(p) == 0 for p in founders["parent_ids"])
    # Each cull removed the lowest window value among that generation's experts.
    for g in (1, 3, 5, 7):
        window = rows[(rows["generation"] > g - 3) & (rows["generation"] <= g)]
        means = window.groupby("expert_id")["value"].mean()
        alive = rows[(rows["generation"] == g) & (rows["born"] <= g)]["expert_id"]  # not the children made after g
        gone = set(rows[rows["culled"] == g]["expert_id"])
        assert set(means[alive].nsmallest(2).index) == gone, g
