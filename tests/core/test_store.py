import pandas as pd
import pyarrow.parquet as pq

import pytest

from evoforge.core.store import RunStore, atomic_write


def frame(generation, n):
    return pd.DataFrame({"cid": range(generation * 10, generation * 10 + n), "generation": generation, "text": ["t"] * n})


def test_generations_merge_into_one_candidates_file(tmp_path):
    store = RunStore(tmp_path / "run")
    for g in range(3):
        experts = pd.DataFrame({"generation": [g, g], "expert_id": [0, 1], "value": [g, g]})
        store.write_generation(g, frame(g, 4), frame(g, 2), experts, {"qd_score": g / 2})
    path = store.merge_candidates(3)
    table = pq.read_table(path)
    assert table.num_rows == 12 and sorted(set(table.column("generation").to_pylist())) == [0, 1, 2]
    assert store.read_experts(2)["value"].tolist() == [2, 2]
    assert len(store.read_elites(1)) == 2
    assert store.read_metrics(1) == {"qd_score": 0.5}  # what a resumed run logs to MLflow if a crash skipped it


def test_redoing_a_generation_replaces_its_expert_rows(tmp_path):
    store = RunStore(tmp_path / "run")
    experts = pd.DataFrame({"generation": [0], "expert_id": [0], "value": [0.1]})
    store.write_generation(0, frame(0, 1), frame(0, 1), experts, {})
    store.write_generation(1, frame(1, 1), frame(1, 1), experts.assign(generation=1, value=0.2), {})
    store.write_generation(1, frame(1, 1), frame(1, 1), experts.assign(generation=1, value=0.3), {})  # redone
    history = pd.read_parquet(store.experts_path)
    assert history["generation"].tolist() == [0, 1] and history["value"].tolist() == [0.1, 0.3]


def test_state_is_written_atomically(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.read_state() is None
    store.write_state({"completed": 2})
    assert store.read_state() == {"completed": 2}
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "file.txt"
    atomic_write(path, lambda tmp: tmp.write_text("old"))

    def half_then_fail(tmp):
        tmp.write_text("ha")
        raise OSError("injected: disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_an_expert_that_joins_after_a_commit_is_read_back_with_that_generation(tmp_path):
    store = RunStore(tmp_path / "run")
    experts = pd.DataFrame({"generation": [0, 0], "expert_id": [0, 1], "backend": ["smollm2"] * 2, "value": [0.1, 0.2]})
    store.write_generation(0, frame(0, 1), frame(0, 1), experts, {})
    store.add_expert(0, {"expert_id": 2, "backend": "runs/r/finetune/g0000/checkpoints/epoch_1", "value": 0.2})
    store.add_expert(0, {"expert_id": 2, "backend": "runs/r/finetune/g0000/checkpoints/epoch_1", "value": 0.2})
    assert store.read_experts(0)["expert_id"].tolist() == [0, 1, 2]  # adding it again replaces it
    assert store.read_experts(0)["backend"].iloc[2].endswith("epoch_1")
    assert not list((tmp_path / "run").glob(".*.tmp"))
