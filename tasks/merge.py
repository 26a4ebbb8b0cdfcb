"""Tasks of the `merge_models` flow: thin wrappers over evoforge.training.merging, one to one.

They take in-process models and a tracker, which cannot be hashed, so caching is off.
"""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge.core.config import MergeConfig, RunConfig
from evoforge.training import merging


@task(name="merge-adapters", cache_policy=NO_CACHE)
def merge_adapters(models: list[str], settings: MergeConfig, folder: Path, device: str) -> dict:
    return merging.merge_parents(models, settings, folder, device)


@task(name="register-merged", cache_policy=NO_CACHE)
def register_merged(merged: dict, tracker, register_as: str) -> tuple[str, str | None]:
    return merging.register_merged(merged, tracker, register_as)


@task(name="evaluate-merged", cache_policy=NO_CACHE)
def evaluate_merged(config: RunConfig, merged: dict, models: list[str], out: Path, tracker, version: str | None,
                    register_as: str) -> dict:
    return merging.evaluate_merged(config, merged, models, out, tracker, version, register_as)
