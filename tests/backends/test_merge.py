"""Merge weights (models/merge.py) on tiny real LoRA adapters of SmolLM2's architecture (Llama), in float32.

The adapters are built deterministically (peft's random, non-zero initialisation under a fixed seed) on a tiny
random Llama, so every expected delta is known and no model file loads; a test runs in well under a second.
"""

import copy

import pytest
import torch

from models.merge import merge_adapters

HIDDEN = 8  # q_proj is 8 x 8: two rank-4 adapters fill its rank, so TIES' SVD re-factoring loses nothing


@pytest.fixture(scope="module")
def base():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=HIDDEN, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    return LlamaForCausalLM(config).float().eval()


def adapter(base, folder, seed: int, r: int = 4, targets=("q_proj",)):
    """A LoRA adapter with non-zero A and B drawn under `seed`, saved to `folder`."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False)
    get_peft_model(copy.deepcopy(base), config).save_pretrained(folder)
    return folder


def deltas(model, name: str) -> dict[str, torch.Tensor]:
    """Every LoRA layer's weight delta of adapter `name` (scaling included)."""
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        return {k: m.get_delta_weight(name) for k, m in model.named_modules()
                if isinstance(m, LoraLayer) and name in m.lora_A}


def parent_deltas(base, folders) -> list[dict[str, torch.Tensor]]:
    from peft import PeftModel

    out = []
    for folder in folders:
        model = PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
        out.append({k.replace("base_model.model.", ""): v for k, v in deltas(model, "default").items()})
    return out


def merged_deltas(model) -> dict[str, torch.Tensor]:
    return {k.replace("base_model.model.", ""): v for k, v in deltas(model, "default").items()}


def test_linear_merge_of_an_adapter_with_itself_is_that_adapter(base, tmp_path):
    a = adapter(base, tmp_path / "a", seed=1)
    merged, residual = merge_adapters(base, [a, a], [0.5, 0.5], "linear")
    (expected,) = parent_deltas(base, [a])
    got = merged_deltas(merged)
    assert set(got) == set(expected) and len(got) == 2  # q_proj of both layers
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    assert residual < 1e-5


def test_weights_scale_the_deltas_and_adapters_of_different_ranks_merge(base, tmp_path):
    a = adapter(base, tmp_path / "a", seed=1, r=4, targets=("q_proj", "v_proj"))
    b = adapter(base, tmp_path / "b", seed=2, r=2, targets=("q_proj", "v_proj"))
    da, db = parent_deltas(base, [a, b])
    merged, _ = merge_adapters(base, [a, b], [0.7, 0.3], "linear")
    doubled, _ = merge_adapters(base, [a, b], [1.4, 0.6], "linear")
    assert merged.peft_config["default"].r == 6  # the ranks add up: the merge is exact
    got, got2 = merged_deltas(merged), merged_deltas(doubled)
    for key in da:
        torch.testing.assert_close(got[key], 0.7 * da[key] + 0.3 * db[key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got2[key], 2 * got[key], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(da[key], db[key], atol=1e-3)  # the two parents differ: the weights matter


def test_ties_drops_the_entries_whose_sign_loses_the_election(base, tmp_path):
    a = adapter(base, tmp_path / "a", seed=1)
    b = adapter(base, tmp_path / "b", seed=2)
    da, db = parent_deltas(base, [a, b])
    # density 1: no trimming, so only TIES' sign election and disjoint mean act.
    merged, residual = merge_adapters(base, [a, b], [1.0, 1.0], "ties", density=1.0)
    got = merged_deltas(merged)
    conflicts = 0
    for key in da:
        x, y = da[key], db[key]
        elected = torch.sign(x + y)
        agree = torch.sign(x) == torch.sign(y)
        # Agreeing entries are averaged; of a conflicting pair only the entry with the elected sign stays.
        expected = torch.where(agree, (x + y) / 2, torch.where(torch.sign(x) == elected, x, y))
        torch.testing.assert_close(got[key], expected, rtol=1e-4, atol=1e-5)
        conflicts += int((~agree).sum())
        # A plain sum differs exactly where signs conflict: there TIES keeps one entry, not the sum.
        assert not torch.allclose(got[key][~agree], (x + y)[~agree], atol=1e-4)
    assert conflicts > 10
    assert residual < 1e-4


def test_ties_trims_to_the_density_before_the_election(base, tmp_path):
    a = adapter(base, tmp_path / "a", seed=1)
    b = adapter(base, tmp_path / "b", seed=2)
    merged, _ = merge_adapters(base, [a, b], [1.0, 1.0], "ties", density=0.2)
    for key, delta in merged_deltas(merged).items():
        # Each parent keeps its top 20% entries by magnitude, so at most 40% of the merged entries are non-zero.
        assert (delta.abs() > 1e-6).float().mean() <= 0.4 + 1e-6


def test_dare_merges_are_seeded(base, tmp_path):
    a = adapter(base, tmp_path / "a", seed=1)
    b = adapter(base, tmp_path / "b", seed=2)
    first, residual = merge_adapters(base, [a, b], [0.5, 0.5], "dare_ties", density=0.5, seed=3)
    again, _ = merge_adapters(base, [a, b], [0.5, 0.5], "dare_ties", density=0.5, seed=3)
    other, _ = merge_adapters(base, [a, b], [0.5, 0.5], "dare_ties", density=0.5, seed=4)
    one, two, three = merged_deltas(first), merged_deltas(again), merged_deltas(other)
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert any(not torch.allclose(one[k], three[k]) for k in one)
    assert residual != residual  # NaN: DARE's random drops cannot be recomputed to compare against


def test_peft_factor_space_linear_is_not_a_weighted_sum_of_deltas(base, tmp_path):
    """Why evoforge maps 'linear' to peft's `cat`: peft's own `linear` combines the A and B factors separately, so
    an adapter merged with itself at 0.5 / 0.5 comes out with twice its delta. If a peft upgrade changes that,
    this test says so and the mapping can be revisited."""
    from peft import PeftModel

    a = adapter(base, tmp_path / "a", seed=1)
    model = PeftModel.from_pretrained(copy.deepcopy(base), str(a), adapter_name="p0")
    model.load_adapter(str(a), adapter_name="p1")
    model.add_weighted_adapter(["p0", "p1"], [0.5, 0.5], "factor_linear", combination_type="linear")
    own, factor = deltas(model, "p0"), deltas(model, "factor_linear")
    for key in own:
        torch.testing.assert_close(factor[key], 2 * own[key], rtol=1e-5, atol=1e-6)


def test_the_base_model_is_left_as_it_was(base, tmp_path):
    a = adapter(base, tmp_path / "a", seed=1)
    b = adapter(base, tmp_path / "b", seed=2)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merge_adapters(base, [a, b], [0.5, 0.5], "ties")
    assert base.__class__.__name__ == "LlamaForCausalLM"
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("method, adapters, weights", [("average", 2, 2), ("linear", 1, 1), ("linear", 2, 3)])
def test_bad_requests_are_refused(base, tmp_path, method, adapters, weights):
    a = adapter(base, tmp_path / "a", seed=1)
    with pytest.raises(ValueError):
        merge_adapters(base, [a] * adapters, [1.0] * weights, method)
