"""The per-row sampling processors on hand-made logits (no model needed)."""

import torch

from evoforge.experts import SamplingSettings
from models.transformers_backend import PerRowSampling, PerRowTokenBudget


def settings(**kw):
    return SamplingSettings(**{"temperature": 1.0, "top_p": 1.0, **kw})


def test_top_p_is_applied_per_row():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 2))
    proc = PerRowSampling([settings(top_p=0.6), settings(top_p=1.0)], prompt_length=1, device=torch.device("cpu"))
    out = proc(torch.zeros((2, 1), dtype=torch.long), logits.clone())
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]  # 0.5 < 0.6, so the 2nd token stays
    assert torch.isfinite(out[1]).all()


def test_temperature_is_applied_per_row():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    proc = PerRowSampling([settings(temperature=0.5), settings(temperature=2.0)], 1, torch.device("cpu"))
    out = proc(torch.zeros((2, 1), dtype=torch.long), logits.clone())
    assert out[0].tolist() == [4.0, 0.0] and out[1].tolist() == [1.0, 0.0]


def test_frequency_and_presence_penalties_count_only_generated_tokens():
    logits = torch.zeros((2, 3))
    # prompt = [2, 2]; generated so far: row 0 -> [1, 1], row 1 -> [0, 1]
    input_ids = torch.tensor([[2, 2, 1, 1], [2, 2, 0, 1]])
    proc = PerRowSampling(
        [settings(frequency_penalty=0.5, presence_penalty=0.25), settings(frequency_penalty=0.0, presence_penalty=1.0)],
        prompt_length=2,
        device=torch.device("cpu"),
    )
    out = proc(input_ids, logits)
    assert out[0].tolist() == [0.0, -(2 * 0.5 + 0.25), 0.0]  # token 2 is only in the prompt: no penalty
    assert out[1].tolist() == [-1.0, -1.0, 0.0]


def test_token_budget_stops_each_row_at_its_own_limit():
    budget = PerRowTokenBudget([2, 4], prompt_length=3, device=torch.device("cpu"))
    assert budget(torch.zeros((2, 5), dtype=torch.long), None).tolist() == [True, False]
    assert budget(torch.zeros((2, 7), dtype=torch.long), None).tolist() == [True, True]
