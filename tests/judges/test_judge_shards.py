"""Judging a generation in contiguous shards (`judge_shards`): the shards' score frames, concatenated in order, are
the scores of judging every text at once, through the run's real panel (SmolLM2 chat judges and the MiniLM
embedding judge, Platt-calibrated and combined by Bayesian model averaging on the domain's references), in float32.

Why a tolerance and not equality: a shard is its own batch, so the texts share forward passes with other texts
(other padding, and a shared-prefix cache over other rows); float32 sums in another order then, which moves a
log-probability in its last bits. The outcome is what must not change: the same archive (cells, elites) from the
same candidates.
"""

import numpy as np
import pandas as pd
import pytest

from evoforge.core.archive import QDArchive
from evoforge.core.config import RunConfig
from evoforge.steps.evolution import contiguous_shards, make_panel

# Scores in [0, 1]; float32 re-batching moved them by at most 2.5e-6 on the 2-core Xeon (13 texts, 2-5 shards).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fitted(exact_backend, embedder):
    """The run's default panel fitted on the opinions domain's references, and 13 texts of varied length."""
    from evoforge.core.domain import load_domain

    domain = load_domain("opinions")
    panel = make_panel(RunConfig(precision="float32"), domain, {"smollm2": exact_backend})
    texts = domain.load_pool()[:13]
    assert len({len(t) for t in texts}) > 5  # lengths differ, so batches pad differently
    return panel, texts, {"smollm2": exact_backend}, domain


@pytest.mark.slow
@pytest.mark.parametrize("shards", [2, 3, 5])
def test_scoring_in_shards_equals_scoring_at_once(fitted, shards):
    panel, texts, backends, domain = fitted
    whole = panel.judge(backends, texts)
    parts = [panel.judge(backends, shard) for shard in contiguous_shards(texts, shards)]
    sharded = pd.concat(parts, ignore_index=True)

    assert list(sharded.columns) == list(whole.columns) and len(sharded) == len(whole)
    numeric = [c for c in whole.columns if whole[c].dtype.kind == "f"]
    assert {"quality", "measure_sentiment"} <= set(numeric)
    gap = float((sharded[numeric] - whole[numeric]).abs().max().max())
    assert gap <= TOLERANCE, f"sharded scores differ from the whole batch's by {gap:.2e}"
    for column in set(whole.columns) - set(numeric):  # the guards' flags are per text: exactly equal
        assert sharded[column].tolist() == whole[column].tolist()

    # The outcome: the same texts placed in the same cells, the same elites.
    def archive(scores: pd.DataFrame) -> pd.DataFrame:
        a = QDArchive(domain.axis_names, [axis.bins for axis in domain.axes])
        a.add(np.arange(len(texts)), texts, scores["quality"].to_numpy(), scores[["measure_sentiment"]].to_numpy(), 0)
        return a.elites()[["cell", "cid"]].sort_values("cell").reset_index(drop=True)

    pd.testing.assert_frame_equal(archive(sharded), archive(whole))


def test_contiguous_shards_keep_the_order_and_balance():
    texts = [f"t{i}" for i in range(7)]
    assert contiguous_shards(texts, 3) == [["t0", "t1", "t2"], ["t3", "t4"], ["t5", "t6"]]
    assert contiguous_shards(texts, 1) == [texts]
    assert contiguous_shards(texts[:2], 4) == [["t0"], ["t1"]]  # no empty shard
    assert contiguous_shards([], 3) == []


def test_judge_shards_that_cannot_help_are_refused_by_field():
    assert RunConfig(judge_shards=2).judge_shards == 2  # a local cluster of 2 workers (the default)
    assert RunConfig(judge_shards=4, workers=1, cluster="tcp://127.0.0.1:8786").cluster
    with pytest.raises(ValueError, match="judge_shards: 2 shards on a local cluster of 1 worker"):
        RunConfig(judge_shards=2, workers=1)
    with pytest.raises(ValueError, match="judge_shards: an island run judges each island's candidates"):
        RunConfig(judge_shards=2, islands=2)
    with pytest.raises(ValueError, match="judge_shards: 9 shards of a generation of batch_size 8"):
        RunConfig(judge_shards=9, batch_size=8)
    with pytest.raises(ValueError, match="cluster: a Dask cluster runs island populations or judge shards"):
        RunConfig(cluster="tcp://127.0.0.1:8786")


def test_run_takes_judge_shards_from_the_command_line():
    from app.cli import build_parser, run_config

    config = run_config(build_parser().parse_args(["run", "--judge-shards", "3", "--workers", "3"]))
    assert (config.judge_shards, config.workers) == (3, 3)
