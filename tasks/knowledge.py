"""Tasks of the `ingest` flow: thin wrappers over evoforge.knowledge, one per step."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from evoforge.core.config import IngestConfig
from evoforge.knowledge.base import IngestReport, open_base
from evoforge.knowledge.sources import Source, read_sources


@task(name="read-sources", cache_policy=NO_CACHE)
def read(config: IngestConfig) -> tuple[list[Source], list[str]]:
    return read_sources(config.path)


@task(name="embed-and-store", cache_policy=NO_CACHE)
def store(config: IngestConfig, sources: list[Source], problems: list[str]) -> tuple[IngestReport, dict]:
    kb = open_base(config.kb, chunk_words=config.chunk_words, overlap_words=config.overlap_words)
    return kb.add(sources, problems), kb.stats()
