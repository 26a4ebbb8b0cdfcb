"""Policy-gradient fine-tuning of a causal LM against a reward (seed 002's PPO; issue 16's RL from judge reward).

Group-relative REINFORCE with LoRA, on the CPU. Each step samples `group` completions for each of a few prompts,
scores them with the caller's reward, and takes one AdamW step on

    loss = -mean_i( A_i * mean_t log pi(y_it) ) + kl * mean_it( exp(d) - d - 1 ),   d = log pi_ref - log pi

where A_i is the completion's reward minus its group's mean, over the group's standard deviation (GRPO's
advantage: no value network, the other samples of the same prompt are the baseline), and the second term is the
usual non-negative estimate of the per-token KL to the base model (the same weights with the adapter off). One
update per sampled batch keeps it on-policy: the policy that sampled is the one updated, so PPO's probability ratio
is 1 and its clipping never acts; that is what GRPO reduces to here, so neither is computed.
"""

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from models.backend import SamplingSettings
from models.finetune import prepare_model, save_checkpoint


class PolicySettings(Protocol):
    """What the loop reads (evoforge's `RLConfig` has these fields)."""

    steps: int
    prompts_per_step: int
    group: int
    max_new_tokens: int
    temperature: float
    learning_rate: float
    kl: float
    max_grad_norm: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    seed: int
    method: str  # always 'lora': the reference model is the base with the adapter off


# Rows per forward and backward pass: their float32 logits over a 49k-token vocabulary are the step's memory peak
# (16 rows of 200 tokens: 0.6 GB, and as much again for the log-softmax and its gradient).
MICRO_BATCH = 4


@dataclass(frozen=True)
class Sampled:
    prompts: list[str]  # each prompt `group` times in a row, in the model's chat format
    texts: list[str]
    ended: list[bool]  # the model ended the text itself (else the token budget cut it)

    def rows(self, part: slice) -> "Sampled":
        return Sampled(self.prompts[part], self.texts[part], self.ended[part])


def group_advantages(rewards: np.ndarray, group: int) -> np.ndarray:
    """Per completion: its reward minus its group's mean, over the group's std (0 for a group that all scored
    the same: it says nothing about which way to move)."""
    r = np.asarray(rewards, dtype=float).reshape(-1, group)
    std = r.std(axis=1, keepdims=True)
    return np.where(std > 1e-8, (r - r.mean(axis=1, keepdims=True)) / np.maximum(std, 1e-8), 0.0).ravel()


def completion_logprobs(model, tokenizer, drawn: Sampled) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each completion token given its prompt (the text re-tokenised, plus the end of turn
    where the model ended it: a text the budget cut did not choose to end), and the mask of those tokens;
    [rows, tokens], right-padded."""
    rows = []
    for prompt, text, ended in zip(drawn.prompts, drawn.texts, drawn.ended):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(text + (tokenizer.eos_token if ended else ""), add_special_tokens=False)["input_ids"]
        rows.append((p, c))
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    scored = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (p, c) in enumerate(rows):
        ids[r, : len(p) + len(c)] = torch.tensor(p + c)
        attention[r, : len(p) + len(c)] = 1
        scored[r, len(p) : len(p) + len(c)] = True
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logprobs, scored[:, 1:]


def policy_loss(logprobs: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
                kl: float, rows: int | None = None, tokens: float | None = None) -> tuple[torch.Tensor, float]:
    """The loss above and the per-token KL estimate, for these rows; given the whole batch's `rows` and `tokens`,
    both are this slice's share, so the slices of one batch add up to the batch's loss and KL."""
    m = mask.float()
    rows, tokens = rows or len(advantages), tokens or float(m.sum().clamp(min=1))
    per_row = (logprobs * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
    d = reference - logprobs
    kl_share = ((torch.exp(d) - d - 1) * m).sum() / tokens
    return -(advantages * per_row).sum() / rows + kl * kl_share, float(kl_share.detach())


def sample(backend, prompts: list[str], group: int, settings: PolicySettings, seed: int) -> Sampled:
    """`group` completions of each prompt, sampled in one batched call with the policy's current weights."""
    rows = [p for p in prompts for _ in range(group)]
    sampling = SamplingSettings(temperature=settings.temperature, top_p=1.0, max_new_tokens=settings.max_new_tokens)
    out = backend.generate(rows, [sampling] * len(rows), seed=seed, desc="rl sample")
    return Sampled(rows, [g.text for g in out], [g.new_tokens < settings.max_new_tokens for g in out])


def train_policy(
    base,
    prompts: Callable[[np.random.Generator], tuple[list[str], list]],
    reward: Callable[[list[str], list], np.ndarray],
    settings: PolicySettings,
    out_dir: Path,
    base_model: str,
    on_step=None,
) -> tuple[Path, list[dict]]:
    """Train a LoRA adapter on `base` (a float32 TransformersBackend; left unchanged) by the loop above.
    `prompts(rng)` gives a step's user prompts (already in the chat format) and one target per prompt;
    `reward(texts, targets)` scores completions (one target per text). Returns the saved adapter's folder and the
    per-step history (reward mean and spread, KL, loss)."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    policy = copy.copy(base)  # the backend's generate and tokenizer, with a trainable copy of the weights
    policy.model = prepare_model(copy.deepcopy(base.model), settings)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    history = []
    for step in range(settings.steps):
        batch, targets = prompts(rng)
        policy.model.eval()  # sampling without dropout: the completions are the policy's own
        drawn = sample(policy, batch, settings.group, settings, seed=settings.seed * 100_003 + step)
        row_targets = [t for t in targets for _ in range(settings.group)]
        rewards = np.asarray(reward([t.strip() for t in drawn.texts], row_targets), dtype=float)
        advantages = torch.tensor(group_advantages(rewards, settings.group), dtype=torch.float32)
        parts = [slice(i, i + MICRO_BATCH) for i in range(0, len(drawn.texts), MICRO_BATCH)]
        with torch.no_grad(), policy.model.disable_adapter():
            references = [completion_logprobs(policy.model, base.tokenizer, drawn.rows(p)) for p in parts]
        tokens = float(sum(mask.sum() for _, mask in references))
        policy.model.train()
        optimizer.zero_grad(set_to_none=True)
        loss_value = kl_value = 0.0
        for part, (reference, mask) in zip(parts, references):  # gradients add up over the slices
            logprobs, _ = completion_logprobs(policy.model, base.tokenizer, drawn.rows(part))
            loss, kl_share = policy_loss(logprobs, reference, mask, advantages[part], settings.kl,
                                         rows=len(drawn.texts), tokens=max(tokens, 1.0))
            loss.backward()
            loss_value, kl_value = loss_value + float(loss.detach()), kl_value + kl_share
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        record = {"step": step, "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
                  "kl": kl_value, "loss": loss_value, "tokens": int(tokens)}
        history.append(record)
        if on_step is not None:
            on_step(record)
    policy.model.eval()
    return save_checkpoint(policy.model, base.tokenizer, Path(out_dir), base_model, settings), history
