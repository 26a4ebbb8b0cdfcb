"""Where an island run's (or a judge_shards run's) tasks compute: a Dask cluster, through Prefect's
`DaskTaskRunner` (prefect-dask).

Either the scheduler at `config.cluster` (a cluster someone operates: `dask scheduler` and `dask worker` processes
on several machines, or any Dask deployment), or a local cluster of `config.workers` worker processes, one thread
each, started here and stopped with the run. The cluster lives for the whole run, so each worker process loads its
models once (tasks.evolution.evolve_island, judge_shard) and keeps them over the generations.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from evoforge.core.config import RunConfig
from models.embedder import load_embedder
from tasks.evolution import worker_backends


# Dask starts its workers with MALLOC_TRIM_THRESHOLD_=65536 (to give memory back to the system sooner). Setting it
# also turns off glibc's adaptive mmap threshold, so every large tensor a model step allocates is a fresh mmap: judging
# on such a worker took 5.5 s where the flow's process took 3.2 s for the same 32 texts (2-core Xeon, bfloat16), and
# 3.0 s without the setting. The workers keep their models for the run, so there is little memory to give back.
# deployments/dask/evoforge.yaml says the same for `dask worker` processes started by hand (DASK_CONFIG).
NO_MALLOC_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextmanager
def dask_task_runner(config: RunConfig, model_names: list[str]) -> Iterator:
    """A started `DaskTaskRunner` for the calling flow run to submit its island tasks to.

    Each task carries its flow run's context to the worker (Prefect serializes the flow's parameters into it), so
    tasks are submitted from the run's own flow, whose one parameter is its config, never from a subflow holding
    the run's state and models. The workers report to the flow's Prefect API: its URL travels in each task's
    settings, so a temporary server started by the flow's process is the one they use too.

    Every worker there loads `model_names` (and the embedding judges' embedders) before the first generation, all
    at once, so the generations' times (and a `max_seconds` budget) do not include the workers' start-up; a worker
    that joins later, or replaces a dead one, loads them at its first task."""
    import dask
    from distributed import LocalCluster
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    with ExitStack() as stack:
        address = config.cluster
        if address is None:
            # Processes, not threads: each worker computes on its own core, beside the flow's process. Dask starts
            # each with OMP_NUM_THREADS=1 (distributed.nanny.pre-spawn-environ), so N workers use N cores.
            stack.enter_context(dask.config.set(NO_MALLOC_TRIM))
            cluster = stack.enter_context(LocalCluster(n_workers=config.workers, threads_per_worker=1, processes=True,
                                                       host="127.0.0.1", dashboard_address=None))
            address = cluster.scheduler_address
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        runner = stack.enter_context(DaskTaskRunner(address=address))
        embedders = sorted({j.model for j in config.judges if j.kind == "embedding"})
        runner.client.run(_load, model_names, embedders, config.precision, config.device)
        yield runner


def _load(names: list[str], embedders: list[str], precision: str, device: str) -> None:
    worker_backends(names, precision, device)  # kept in the worker's cache; nothing comes back
    for name in embedders:
        load_embedder(name)  # as an embedding judge loads it (evoforge.judges.embedding.pole_scores)
