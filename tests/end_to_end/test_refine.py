"""`search: refine` end to end: a tiny evolution run whose candidates are written from the elites nearest a target."""

import pandas as pd
import pytest

from evoforge.core.config import RunConfig

pytestmark = pytest.mark.slow


def test_a_refine_run_writes_candidates_from_earlier_elites(prefect_server, backend, tmp_path):
    from flows.evolution import evolution_run

    config = RunConfig(generations=2, experts=2, batch_size=4, max_new_tokens=24, continue_tokens=8, seed=3,
                       search="refine", judge_references=False, heldout_judge=False, out=str(tmp_path),
                       run_name="refine")
    summary = evolution_run(config)
    candidates = pd.read_parquet(tmp_path / "refine" / "candidates.parquet")
    assert set(candidates["mutation"]) == {"refine"} and len(candidates) == 8
    first, second = candidates[candidates["generation"] == 0], candidates[candidates["generation"] == 1]
    assert all(len(g) == 0 for g in first["genotype"])  # an empty archive: the plain niche instruction
    elites = set(first.loc[first["inserted"], "text"])
    assert elites, "generation 0 filled some cells"
    for parents in second["genotype"]:  # generation 1 read up to 3 elites of generation 0
        assert 1 <= len(parents) <= min(3, len(elites)) and set(parents) <= elites
    assert summary["qd_score"] > 0
