"""evoforge: quality-diversity evolution of LLM outputs and LLM experts."""

__version__ = "0.1.0"
