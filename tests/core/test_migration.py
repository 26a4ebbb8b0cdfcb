"""Island populations' plain logic (evoforge.steps.islands): topology, migration, the union archive, and the pools a
resumed run rebuilds. No models: archives are filled by hand."""

import numpy as np
import pandas as pd
import pytest

from evoforge.core.archive import QDArchive
from evoforge.core.config import RunConfig
from evoforge.steps.islands import Island, island_pools, migrate, migrates_after, receivers, union_archive

BINS = [[0.25, 0.5, 0.75]]  # one axis, 4 cells


def island(index: int, elites: list[tuple[int, float, float]], generation: int = 0) -> Island:
    """An island whose archive holds (cid, quality, measure) elites; texts are 't<cid>'."""
    archive = QDArchive(["sentiment"], BINS)
    if elites:
        cids, quality, measure = map(np.array, zip(*elites))
        archive.add(cids, [f"t{c}" for c in cids], quality, measure[:, None], generation)
    return Island(index, archive, experts=[], pool=["seed"])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_ring_sends_each_island_to_the_next(k):
    assert receivers(k, "ring", np.random.default_rng(0)) == [(i + 1) % k for i in range(k)]


@pytest.mark.parametrize("k", [2, 3, 7])
def test_random_topology_never_sends_an_island_to_itself_and_is_seeded(k):
    draws = [receivers(k, "random", np.random.default_rng(seed)) for seed in range(50)]
    assert all(target != i for targets in draws for i, target in enumerate(targets))
    assert all(0 <= t < k for targets in draws for t in targets)
    assert draws[3] == receivers(k, "random", np.random.default_rng(3))
    if k > 2:  # with two islands the only other island is forced
        assert len({tuple(d) for d in draws}) > 1


def test_unknown_topology_is_refused_by_name():
    with pytest.raises(ValueError, match="migration_topology"):
        receivers(3, "star", np.random.default_rng(0))


def test_island_settings_that_do_not_combine_are_refused_by_field():
    from evoforge.core.config import FinetuneConfig

    with pytest.raises(ValueError, match="cluster: a Dask cluster runs island populations"):
        RunConfig(islands=1, cluster="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="finetune.join_population"):
        RunConfig(islands=2, finetune=FinetuneConfig(enabled=True, every=1, join_population=True))
    with pytest.raises(ValueError, match="screen: value-model screening"):
        RunConfig(islands=2, screen=3)


def test_migration_is_due_every_interval_and_never_for_one_island():
    config = RunConfig(islands=2, migration_interval=3)
    assert [g for g in range(10) if migrates_after(config, g)] == [2, 5, 8]
    assert not any(migrates_after(RunConfig(migration_interval=1), g) for g in range(5))


def test_the_best_elites_migrate_along_the_ring_and_join_the_receivers_archive_and_pool():
    config = RunConfig(islands=3, migrants=2, migration_topology="ring")
    islands = [
        island(0, [(1, 0.9, 0.1), (2, 0.2, 0.4), (3, 0.6, 0.9)]),
        island(1, [(10, 0.5, 0.1)]),  # holds cell 0 with 0.5: island 0's 0.9 beats it
        island(2, []),
    ]
    moved = migrate(islands, generation=4, config=config)
    # Island 0's two best (cids 1, 3) go to island 1; island 1's one elite to island 2; island 2 has none to send.
    assert moved[["source", "target", "cid"]].values.tolist() == [[0, 1, 1], [0, 1, 3], [1, 2, 10]]
    assert (moved["generation"] == 4).all() and moved["inserted"].all()
    assert moved.set_index("cid").loc[1, "status"] == "improved" and moved.set_index("cid").loc[3, "status"] == "new_cell"
    assert sorted(islands[1].archive.elites()["cid"]) == [1, 3]  # 10 lost its cell to 1
    assert sorted(islands[2].archive.elites()["cid"]) == [10]
    assert islands[1].pool == ["seed", "t1", "t3"] and islands[2].pool == ["seed", "t10"]
    assert sorted(islands[0].archive.elites()["cid"]) == [1, 2, 3]  # the sender keeps its elites


def test_a_migrant_the_receiver_already_beats_is_recorded_but_not_taken():
    islands = [island(0, [(1, 0.3, 0.1)]), island(1, [(10, 0.8, 0.1)])]
    moved = migrate(islands, generation=0, config=RunConfig(islands=2, migrants=1))
    taken = moved.set_index("cid")["inserted"]
    assert not taken[1] and taken[10]  # 0.3 loses to 0.8 in island 1; 0.8 takes island 0's cell
    assert islands[1].pool == ["seed"] and islands[0].pool == ["seed", "t10"]


def test_union_holds_the_best_elite_per_cell_over_the_islands_once():
    a = island(0, [(1, 0.9, 0.1), (2, 0.3, 0.4)])
    b = island(1, [(10, 0.5, 0.1), (11, 0.7, 0.4), (12, 0.4, 0.9)])
    migrate([a, b], generation=1, config=RunConfig(islands=2, migrants=1))  # cid 1 now lives in both
    union = union_archive([a, b]).elites().set_index("cell")
    assert union["cid"].to_dict() == {0: 1, 1: 11, 3: 12}
    assert union_archive([a, b]).stats()["qd_score"] == pytest.approx(0.9 + 0.7 + 0.4)
    assert union.loc[0, "generation"] == 0  # the migrant's original, not its copy from generation 1


def test_union_of_empty_islands_is_empty():
    assert len(union_archive([island(0, []), island(1, [])])) == 0


def test_pools_rebuilt_from_the_run_folder_match_the_ones_the_run_grew():
    """A resumed run rebuilds each island's pool from candidates and migrations; the order matters (few-shot items
    are drawn by index), so it must be the order the live run extended them in."""
    config = RunConfig(islands=2, migrants=1)
    live = [island(0, []), island(1, [])]
    rows, migrations = [], []
    for generation, (a, b) in enumerate([((1, 0.4, 0.1), (10, 0.6, 0.9)), ((2, 0.8, 0.9), (11, 0.7, 0.4))]):
        for isl, (cid, q, m) in zip(live, (a, b)):
            status = isl.archive.add([cid], [f"t{cid}"], [q], [[m]], generation)
            isl.pool.extend([f"t{cid}"] if status[0] else [])
            rows.append({"generation": generation, "island": isl.index, "text": f"t{cid}", "inserted": bool(status[0])})
        migrations.append(migrate(live, generation, config))
    rebuilt = island_pools(["seed"], pd.DataFrame(rows), pd.concat(migrations, ignore_index=True), 2)
    assert rebuilt == [isl.pool for isl in live]
    assert rebuilt[0] == ["seed", "t1", "t10", "t2", "t11"]  # own, migrant, own, migrant: in generation order
