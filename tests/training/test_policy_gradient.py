"""RL from judge reward (models/policy_gradient.py, evoforge/training/rl.py): the group-relative advantage, the
loss's direction on the real model, the niche reward, and (slow) the rl_finetune flow on a real Prefect server
and MLflow store."""

import numpy as np
import pandas as pd
import pytest
import torch

from evoforge.core.config import RLConfig
from evoforge.core.niches import bin_centre
from evoforge.training.rl import UNSCORED, niche_batch, niche_reward
from models.policy_gradient import Sampled, completion_logprobs, group_advantages, policy_loss


def test_advantages_are_centred_and_scaled_within_each_group():
    a = group_advantages(np.array([1.0, 0.0, 0.5, 0.5, 0.2, 0.4]), group=2)
    np.testing.assert_allclose(a, [1, -1, 0, 0, -1, 1])  # a group that all scored alike says nothing
    b = group_advantages(np.array([3.0, 1.0, 2.0, 2.0]), group=4)
    assert b.sum() == pytest.approx(0) and b.std() == pytest.approx(1) and b[0] > b[2] > b[1]


def test_kl_term_is_zero_at_the_reference_and_positive_away_from_it():
    lp = torch.log(torch.tensor([[0.5, 0.2], [0.9, 0.1]]))
    mask = torch.tensor([[True, True], [True, False]])
    zero = torch.zeros(2)
    assert policy_loss(lp, lp, mask, zero, kl=1.0)[1] == pytest.approx(0, abs=1e-7)
    loss, kl = policy_loss(lp, lp + 0.3, mask, zero, kl=1.0)
    assert kl > 0 and float(loss) == pytest.approx(kl)


def test_a_batch_in_slices_has_the_whole_batchs_loss_and_kl():
    g = torch.Generator().manual_seed(0)
    lp, ref = -torch.rand(6, 5, generator=g), -torch.rand(6, 5, generator=g)
    mask = torch.rand(6, 5, generator=g) > 0.3
    adv = torch.randn(6, generator=g)
    whole, kl = policy_loss(lp, ref, mask, adv, kl=0.5)
    tokens = float(mask.sum())
    parts = [policy_loss(lp[p], ref[p], mask[p], adv[p], kl=0.5, rows=6, tokens=tokens)
             for p in (slice(0, 4), slice(4, 6))]
    assert float(sum(loss for loss, _ in parts)) == pytest.approx(float(whole), abs=1e-6)
    assert sum(k for _, k in parts) == pytest.approx(kl, abs=1e-6)


def test_one_update_raises_the_favoured_completion_and_lowers_the_other(exact_backend):
    """The loss's gradient moves the real model the way the advantages say (a sign error would fail this)."""
    from models.finetune import prepare_model

    import copy

    settings = RLConfig()
    torch.manual_seed(0)
    model = prepare_model(copy.deepcopy(exact_backend.model), settings)
    prompt = exact_backend.chat_prompt("Write one sentence about carrots.")
    drawn = Sampled([prompt, prompt], ["Carrots are sweet and crunchy.", "Carrots are a bad idea, honestly."],
                    [True, True])
    with torch.no_grad():
        before, mask = completion_logprobs(model, exact_backend.tokenizer, drawn)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    logprobs, mask = completion_logprobs(model, exact_backend.tokenizer, drawn)
    loss, _ = policy_loss(logprobs, before, mask, torch.tensor([1.0, -1.0]), kl=0.0)
    loss.backward()
    optimizer.step()  # LoRA's B starts at zero and takes this step (A's gradient is zero until B is not)
    with torch.no_grad():
        after, _ = completion_logprobs(model, exact_backend.tokenizer, drawn)
    per_row = lambda lp: ((lp * mask).sum(dim=1) / mask.sum(dim=1)).numpy()
    gain = per_row(after) - per_row(before)
    assert gain[0] > 0 > gain[1], gain


def test_niche_reward_is_quality_less_the_miss_and_punishes_what_the_guards_flag(opinions):
    axis = opinions.axes[0]
    top, bottom = axis.num_bins - 1, 0
    scores = pd.DataFrame({"quality": [0.9, 0.9, 0.9, np.nan], "measure_sentiment": [0.95, 0.05, 0.95, 0.5],
                           "flagged": [False, False, True, False]})
    r = niche_reward(scores, opinions, [[top], [top], [top], [top]], miss_weight=1.0)
    assert r[0] == pytest.approx(0.9 - abs(0.95 - bin_centre(axis, top)))
    assert r[1] < r[0]  # the wrong pole, same quality
    assert r[2] == UNSCORED and r[3] == UNSCORED
    quality_only = niche_reward(scores, opinions, [[bottom]] * 4, miss_weight=0.0)
    assert quality_only[0] == quality_only[1] == pytest.approx(0.9)


def test_niche_batch_asks_in_the_chat_format_for_the_niches_it_returns(opinions, backend):
    prompts, niches = niche_batch(opinions, backend, 3, np.random.default_rng(0))
    again, same = niche_batch(opinions, backend, 3, np.random.default_rng(0))
    assert prompts == again and niches == same and len(prompts) == 3
    assert all(p.startswith("<|im_start|>") and opinions.description in p for p in prompts)


@pytest.mark.slow
def test_rl_flow_trains_logs_and_registers_an_adapter_that_changed(prefect_server, backend, tmp_path):
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    from evoforge.core.tracking import tracking_uri
    from flows.finetune import rl_finetune

    import mlflow

    # Another experiment active in the process (as the science benchmark's test leaves it) must not stop the flow
    # from logging its model into its own run.
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment("some-other-experiment")
    settings = RLConfig(steps=2, prompts_per_step=2, group=2, max_new_tokens=12, learning_rate=1e-3)
    summary = rl_finetune(domain="opinions", settings=settings, register_as="rl-test", out=str(tmp_path / "rl"))
    client = MlflowClient(tracking_uri())
    history = client.get_metric_history(summary["mlflow_run_id"], "rl/reward")
    assert [m.step for m in history] == [0, 1] and all(-1 <= m.value <= 1 for m in history)
    assert [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "rl/kl")] == [0, 1]
    assert client.get_model_version("rl-test", summary["version"]).run_id == summary["mlflow_run_id"]
    weights = load_file(f"{summary['checkpoint']}/adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().max() > 0 for w in lora_b)  # B starts at zero: only an update moves it
    assert client.get_run(summary["mlflow_run_id"]).data.params["rl.steps"] == "2"
