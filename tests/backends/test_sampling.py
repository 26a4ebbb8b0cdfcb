"""The per-row sampling processors on hand-made logits (no model needed)."""

import torch

from models.backend import SamplingSettings
from models.transformers_backend import PerRowSampling, PerRowTokenBudget

NO_IDS = torch.zeros((2, 1), dtype=torch.long)


def settings(**kw):
    return SamplingSettings(**{"temperature": 1.0, "top_p": 1.0, **kw})


def test_top_p_is_applied_per_row():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 2))
    proc = PerRowSampling([settings(top_p=0.6), settings(top_p=1.0)], prompt_length=1, device=torch.device("cpu"))
    probs, index = proc.distribution(NO_IDS, logits.clone())
    assert index.tolist() == [[0, 1, 2, 3]] * 2
    assert (probs[0] > 0).tolist() == [True, True, False, False]  # 0.5 < 0.6, so the 2nd token stays
    assert (probs[1] > 0).all()


def test_temperature_is_applied_per_row():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    proc = PerRowSampling([settings(temperature=0.5), settings(temperature=2.0)], 1, torch.device("cpu"))
    probs, _ = proc.distribution(NO_IDS, logits.clone())
    assert torch.allclose(probs[0], torch.tensor([4.0, 0.0]).softmax(0))
    assert torch.allclose(probs[1], torch.tensor([1.0, 0.0]).softmax(0))


def test_frequency_and_presence_penalties_count_only_generated_tokens():
    logits = torch.zeros((2, 3))
    # prompt = [2, 2]; generated so far: row 0 -> [1, 1], row 1 -> [0, 1]
    input_ids = torch.tensor([[2, 2, 1, 1], [2, 2, 0, 1]])
    proc = PerRowSampling(
        [settings(frequency_penalty=0.5, presence_penalty=0.25), settings(frequency_penalty=0.0, presence_penalty=1.0)],
        prompt_length=2,
        device=torch.device("cpu"),
    )
    out = proc.penalized(input_ids, logits)
    assert out[0].tolist() == [0.0, -(2 * 0.5 + 0.25), 0.0]  # token 2 is only in the prompt: no penalty
    assert out[1].tolist() == [-1.0, -1.0, 0.0]


def test_each_row_draws_one_token_from_its_own_nucleus_at_the_right_rates():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 2))
    proc = PerRowSampling([settings(top_p=0.6), settings(top_p=1.0)], 1, torch.device("cpu"), top_k=3)
    draws = []
    for _ in range(4000):
        out = proc(NO_IDS, logits.clone())
        assert (torch.isfinite(out).sum(dim=1) == 1).all()  # generate() runs greedy: it reads the one finite entry
        draws.append(out.argmax(dim=1))
    draws = torch.stack(draws)
    assert set(draws[:, 0].tolist()) == {0, 1}  # the nucleus of row 0
    assert set(draws[:, 1].tolist()) == {0, 1, 2}  # top_k=3: the 4th token is never drawn
    share = torch.bincount(draws[:, 0], minlength=2)[:2].float() / len(draws)
    assert torch.allclose(share, torch.tensor([0.5, 0.3]) / 0.8, atol=0.03)


def test_token_budget_stops_each_row_at_its_own_limit():
    budget = PerRowTokenBudget([2, 4], prompt_length=3, device=torch.device("cpu"))
    assert budget(torch.zeros((2, 5), dtype=torch.long), None).tolist() == [True, False]
    assert budget(torch.zeros((2, 7), dtype=torch.long), None).tolist() == [True, True]
