"""Prefect tasks: thin wrappers over the plain functions in `evoforge`, one task per pipeline step."""
