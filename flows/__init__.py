"""Prefect flows: `evolution_run` (the parent DAG) and its `generation` subflow."""
