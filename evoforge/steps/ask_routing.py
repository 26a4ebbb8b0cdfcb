"""The router in `ask` (`routing: router`, issue 18): each task goes to the experts most likely to be right on
tasks like it, by the task's MiniLM embedding and the credit experts earned on earlier tasks.

Credit is what `ask` already learns values from (`value_signal: agreement`): an answering expert earns 1 on a task
when its answer says what the kept answer says (similarity to it at or above the consensus threshold), else 0; its
credit on a task is the mean over its answers. After each routed ask, one row per answering expert (the task, its
embedding, the expert id, the credit) is appended to `router_credit.parquet` beside the saved population
(`population_file`), so credit carries over between tasks as the experts and their values do. Expert ids are those
of the saved population (a new population starts new credit: pass another population_file).

The scores are `evoforge.search.router.kernel_credit` over embeddings (distance between unit vectors; bandwidth
`routing_bandwidth`, 0.5: two questions of the same kind, cosine about 0.6, weigh 0.2; unrelated ones, cosine
about 0.1, under 0.03), and the answering experts are picked epsilon-greedy over them (`pick_experts`), as the
values are picked without the router. With `answering: K`, only K experts answer: fewer tokens.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from evoforge.core.config import TournamentConfig
from evoforge.core.store import write_parquet
from evoforge.judges.selection import Consensus
from evoforge.search.router import Router

CREDIT_FILE = "router_credit.parquet"


def credit_path(population_file: str | Path) -> Path:
    return Path(population_file).parent / CREDIT_FILE


def read_credit(path: Path) -> pd.DataFrame:
    """The credit rows so far (columns task, expert_id, credit, embedding); none for a new population."""
    if not path.is_file():
        return pd.DataFrame(columns=["task", "expert_id", "credit", "embedding"])
    return pd.read_parquet(path)


def task_router(credit: pd.DataFrame, n_experts: int, bandwidth: float) -> Router:
    """The router over earlier tasks' credit (rows of experts beyond the population's size are ignored)."""
    credit = credit[credit["expert_id"].astype(int) < n_experts] if len(credit) else credit
    dims = len(credit["embedding"].iloc[0]) if len(credit) else 1
    inputs = np.stack(credit["embedding"].to_numpy()) if len(credit) else np.zeros((0, dims))
    return Router(n_experts, inputs.astype(float), credit["expert_id"].to_numpy(dtype=int),
                  credit["credit"].to_numpy(dtype=float), bandwidth)


def agreement_credit(consensus: Consensus, task: str, answers: pd.DataFrame, kept_text: str) -> pd.Series:
    """Each answering expert's credit on one task (a value per expert id): the share of its `answers` (the last
    layer's, every iteration's) whose similarity to the kept answer reaches the consensus threshold."""
    matrix = consensus.matrix([*answers["text"], kept_text], task)
    agree = (np.asarray(matrix)[:-1, -1] >= consensus.threshold).astype(float)
    return pd.Series(agree).groupby(answers["expert_id"].to_numpy(dtype=int)).mean()


def append_credit(path: Path, task: str, embedding: np.ndarray, credit: pd.Series) -> pd.DataFrame:
    """Add one task's credit (a value per expert id) to the credit file; returns the whole file's rows."""
    rows = pd.DataFrame({"task": task, "expert_id": credit.index.astype(int), "credit": credit.to_numpy(dtype=float),
                         "embedding": [np.asarray(embedding, dtype=np.float32).tolist()] * len(credit)})
    earlier = read_credit(path)
    frame = pd.concat([earlier, rows], ignore_index=True) if len(earlier) else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(frame, path)
    return frame


def embed_task(task: str, device: str = "auto") -> np.ndarray:
    from models.embedder import load_embedder

    return load_embedder("minilm", device=device).embed([task])[0]


def routed_scores(population_file: str, task_embedding: np.ndarray, n_experts: int, bandwidth: float) -> np.ndarray:
    """Each expert's score for the task: its kernel-weighted credit on earlier tasks near this one."""
    router = task_router(read_credit(credit_path(population_file)), n_experts, bandwidth)
    return router.scores(task_embedding[None, :])[0]


def routed_experts(config: TournamentConfig, task: str, n_experts: int) -> np.ndarray:
    """The scores `ask` picks its answering experts by under `routing: router` (the hook in answer_step)."""
    return routed_scores(config.population_file, embed_task(task, config.device), n_experts, config.routing_bandwidth)


def record_task_credit(config: TournamentConfig, consensus: Consensus, task: str, final: pd.DataFrame,
                       kept_text: str) -> pd.DataFrame:
    """After a routed ask (the hook in tournament_summary): its experts' credit, appended to the credit file."""
    return append_credit(credit_path(config.population_file), task, embed_task(task, config.device),
                         agreement_credit(consensus, task, final, kept_text))
