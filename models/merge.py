"""Merging LoRA adapters of one base model into one adapter, with peft's weighted adapter merging.

peft's `add_weighted_adapter` has two families of combination types (peft 0.21.2):
- `linear`, `ties`, `dare_linear`, `dare_ties`, `magnitude_prune` combine the A and B factors separately (each
  scaled by sqrt(weight x scaling)) and need one rank for every adapter. That is not the weighted sum of the
  adapters' weight deltas: B_merged @ A_merged has cross terms B_i @ A_j, and merging an adapter with itself at
  weights 0.5 / 0.5 doubles its delta. TIES and DARE then prune and elect signs on factor entries, which are not
  the parameters the methods were designed for.
- `cat` and the `*_svd` types work on the weight deltas dW_i = scaling_i * B_i @ A_i, so they mean what the
  methods' papers mean, and take adapters of different ranks. `cat` stacks the factors: the merged delta is
  exactly sum_i w_i dW_i (rank = sum of the ranks). `*_svd` computes the method's delta, then factors it back to
  a rank-`svd_rank` adapter by SVD; what that cuts off is returned as the residual.

So evoforge's methods are the delta-space ones: linear -> `cat`, ties -> `ties_svd`, dare_ties -> `dare_ties_svd`,
dare_linear -> `dare_linear_svd`, with `svd_rank` the sum of the parents' ranks (capped by the smallest weight).
"""

import copy
import json
import math
from pathlib import Path

import torch

from models.resolve import BASE_FILE

METHODS = {"linear": "cat", "ties": "ties_svd", "dare_ties": "dare_ties_svd", "dare_linear": "dare_linear_svd"}
MERGED = "default"  # peft saves the adapter named "default" at the folder's root, where evoforge's loader looks


def _lora_layers(model) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def merge_adapters(
    base_model, adapters: list[Path], weights: list[float], method: str = "linear", density: float = 0.5,
    seed: int = 0,
):
    """A copy of `base_model` with one adapter, the merge of `adapters` (folders of LoRA adapters trained on it)
    weighted by `weights`. Returns (the peft model, its relative residual: ||merged dW - method's dW|| / ||method's
    dW|| over every merged layer, NaN for the DARE methods, whose random drops cannot be recomputed)."""
    from peft import PeftModel

    if method not in METHODS:
        raise ValueError(f"method '{method}' is not one of {sorted(METHODS)}")
    if len(adapters) != len(weights) or len(adapters) < 2:
        raise ValueError(f"need two or more adapters and one weight each, got {len(adapters)} and {len(weights)}")
    names = [f"parent_{i}" for i in range(len(adapters))]
    # A copy: peft wraps the model's layers in place, and the caller's model may be a shared backend's.
    model = PeftModel.from_pretrained(copy.deepcopy(base_model), str(adapters[0]), adapter_name=names[0])
    for name, folder in zip(names[1:], adapters[1:]):
        model.load_adapter(str(folder), adapter_name=name)
    model.eval()
    rank = sum(model.peft_config[n].r for n in names)
    rank = min(rank, *(min(layer.get_base_layer().weight.shape) for layer in _lora_layers(model)))
    kwargs = {} if method == "linear" else {"svd_rank": rank, "density": density}
    torch.manual_seed(seed)  # DARE's random drops
    model.add_weighted_adapter(names, list(weights), MERGED, combination_type=METHODS[method], **kwargs)
    residual = math.nan if method.startswith("dare") else _residual(model, names, weights, method, density)
    for name in names:
        model.delete_adapter(name)
    model.set_adapter(MERGED)
    return model, residual


@torch.no_grad()
def exact_delta(layer, names: list[str], weights: list[float], method: str, density: float) -> torch.Tensor:
    """The method's merged weight delta of one layer, before any re-factoring (peft's own merge functions)."""
    from peft.utils.merge_utils import task_arithmetic, ties

    deltas = [layer.get_delta_weight(n) for n in names if n in layer.lora_A]
    w = torch.tensor([wt for n, wt in zip(names, weights) if n in layer.lora_A], dtype=deltas[0].dtype)
    return task_arithmetic(deltas, w) if method == "linear" else ties(deltas, w, density, "total")


@torch.no_grad()
def _residual(model, names, weights, method, density) -> float:
    lost, total = 0.0, 0.0
    for layer in _lora_layers(model):
        if MERGED not in layer.lora_A:
            continue
        target = exact_delta(layer, names, weights, method, density)
        lost += float((layer.get_delta_weight(MERGED) - target).pow(2).sum())
        total += float(target.pow(2).sum())
    return math.sqrt(lost / total) if total > 0 else 0.0


def save_merged(model, tokenizer, folder: Path, base_model: str, provenance: dict) -> Path:
    """The merged adapter as a checkpoint folder like the trainer's (adapter, tokenizer, the base model's name), so
    it loads, logs and registers as a tuned model does; `provenance` (parents, method, weights) is kept beside."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, selected_adapters=[MERGED])
    tokenizer.save_pretrained(folder)
    (folder / BASE_FILE).write_text(json.dumps({"base_model": base_model, "method": "lora", "merge": provenance}))
    return folder
