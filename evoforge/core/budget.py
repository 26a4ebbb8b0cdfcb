"""Budgets: how much a run may spend (generated tokens, judge calls, wall time per run and per stage), checked
at generation boundaries against what the committed generations spent, so a stopped run has everything
committed and a later call with a larger budget resumes it."""

from pydantic import BaseModel, ConfigDict, Field

# Budget field -> the per-generation history entry it sums.
SPENT_BY = {
    "max_tokens": "tokens_generated",
    "max_judge_calls": "judge_calls",
    "max_seconds": "seconds_total",
    "max_seconds_generate": "seconds_generate",
    "max_seconds_judge": "seconds_judge",
}


class BudgetConfig(BaseModel):
    """Limits on what one run spends over all its generations, resumes included. Empty: no limit. A run that
    reaches one stops before its next generation and says which."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(None, ge=1, description="New tokens the generators may write in the whole run")
    max_judge_calls: int | None = Field(None, ge=1, description="Judgements (text x judge x question) in the whole run")
    max_seconds: float | None = Field(None, gt=0, description="Wall seconds the run's generations may take")
    max_seconds_generate: float | None = Field(None, gt=0, description="Wall seconds of the generation stage")
    max_seconds_judge: float | None = Field(None, gt=0, description="Wall seconds of the judging stage")


def spent(history: list[dict]) -> dict[str, float]:
    """What the committed generations spent, per budget (entries from before budgets existed count as 0)."""
    return {field: float(sum(h.get(entry, 0) or 0 for h in history)) for field, entry in SPENT_BY.items()}


def exhausted(budget: BudgetConfig, history: list[dict]) -> str | None:
    """The first budget the run has used up, as 'max_tokens: 1,032 of 1,000', or None while all have room."""
    used = spent(history)
    for field in SPENT_BY:
        limit = getattr(budget, field)
        if limit is not None and used[field] >= limit:
            return f"{field}: {used[field]:,.0f} of {limit:,.0f}"
    return None
