"""Evolving arrangements in a run: the cull after a generation (evoforge.search.arrangements has the operators)."""

from dataclasses import replace

import numpy as np
import pandas as pd

from evoforge.search.arrangements import cull, cull_due, next_expert_id
from evoforge.steps.evolution import ArchiveOutcome, RunState

ARRANGEMENT_STREAM = 2**31  # the culls' random stream, apart from the generation's own ([seed, generation])


def cull_experts(state: RunState, outcome: ArchiveOutcome, generation: int) -> ArchiveOutcome:
    """When a cull is due after `generation`, the outcome with the population after it (children replacing the
    culled) and the culled experts; else the outcome as it is. It reads the committed generations' expert rows
    and this generation's values, draws from a stream seeded by the generation, and changes nothing until
    `commit_generation` applies it: a resumed run, or a retried generation, culls as the uninterrupted one."""
    config = state.config
    if not cull_due(config.arrangements, generation):
        return outcome
    committed = state.store.read_expert_history()
    committed = committed.loc[committed["generation"] < generation, ["generation", "expert_id", "value"]]
    now = pd.DataFrame([{"generation": generation, "expert_id": e.expert_id, "value": e.value} for e in outcome.experts])
    history = pd.concat([committed, now], ignore_index=True)
    culling = cull(
        outcome.experts, history, generation, config.arrangements, config.sampling_ranges(),
        state.domain.generator.system_prompts, evolving_backends(state, outcome.experts),
        state.pool + outcome.inserted_texts, np.random.default_rng([config.seed, generation, ARRANGEMENT_STREAM]),
        next_expert_id(history, outcome.experts),
    )
    return replace(outcome, experts=culling.experts, culled=culling.culled)


def evolving_backends(state: RunState, experts) -> list[str]:
    """The backends a child may swap to: the run's generator models and those of living experts (a tuned model's);
    every one is loaded (RunState.model_names)."""
    return sorted(set(state.config.generator_models) | {e.backend for e in experts})
