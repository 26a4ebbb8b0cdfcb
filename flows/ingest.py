"""The `ingest` flow: add documents, a run's elites or ask answers to a knowledge base.

read sources -> embed and store (changed sources replaced, unchanged ones skipped)

Annotations here stay real (no postponed-annotations import): Prefect builds the UI's parameter form from them.
"""

from dataclasses import asdict

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed

from evoforge.core.config import IngestConfig
from tasks.knowledge import read, store

EXAMPLE = IngestConfig(path="data/kb/docs", kb="default")


def report_markdown(config: IngestConfig, report, stats: dict) -> str:
    problems = "".join(f"\n- {p}" for p in report.problems)
    return (f"# Knowledge base `{config.kb}`\n\nAdded from `{config.path}`: {report.added_chunks} chunks from "
            f"{report.added_sources} new and {report.replaced_sources} changed sources; {report.unchanged_sources} "
            f"unchanged sources skipped; {report.removed_chunks} old chunks replaced.\n\n"
            f"Base now: {stats['chunks']} chunks from {stats['sources']} sources ({stats['by_kind']}), folder "
            f"`{stats['folder']}`.\n" + (f"\n## Not ingested\n{problems}\n" if problems else ""))


@flow(name="ingest", log_prints=True)
def ingest(config: IngestConfig = EXAMPLE) -> dict:
    """Add sources to a knowledge base.

    Args:
        config: What to add (a file, a folder, a run folder) and to which knowledge base
    """
    logger = get_run_logger()
    sources, problems = read(config)
    report, stats = store(config, sources, problems)
    create_markdown_artifact(key="ingest-report", markdown=report_markdown(config, report, stats),
                             description=f"knowledge base {config.kb}")
    for problem in report.problems:
        logger.warning("not ingested: %s", problem)
    summary = {**asdict(report), "stats": stats}
    if report.problems:  # the good sources are in; the state says what was left out
        return Completed(message=f"{len(report.problems)} sources not ingested (see the ingest-report artifact)",
                         data=summary)
    return summary
