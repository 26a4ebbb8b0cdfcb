"""Fine-tuning a causal LM on chat examples (prompt -> completion) or plain text, on the CPU.

LoRA through peft by default (full fine-tuning as an option), AdamW with a cosine schedule and warm-up, gradient
accumulation and clipping, a held-out split whose loss is measured every epoch, a checkpoint every epoch, and
early stopping on the held-out loss. Loss on chat examples counts only the completion's tokens.
"""

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from models.resolve import BASE_FILE

class TrainSettings(Protocol):
    """What training reads (evoforge's `FinetuneConfig` has these fields, among others)."""

    method: Literal["lora", "full"]
    epochs: int
    train_batch_size: int
    grad_accum: int
    learning_rate: float
    warmup_ratio: float
    max_grad_norm: float
    patience: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    seed: int


IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, train_loss, eval_loss, seconds
    best_epoch: int = -1
    best_checkpoint: Path | None = None
    stopped_early: bool = False

    @property
    def best_eval_loss(self) -> float:
        return min(h["eval_loss"] for h in self.history)


# --- examples --------------------------------------------------------------------------------------------------


def chat_examples(tokenizer, prompts: list[str], completions: list[str], max_length: int) -> list[Example]:
    """Prompt in the model's chat template (no loss), completion + end-of-turn token (loss)."""
    out = []
    for prompt, completion in zip(prompts, completions):
        messages = [{"role": "user", "content": prompt}]
        prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        p = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion.strip() + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = (p + c)[:max_length]
        labels = ([IGNORE] * len(p) + c)[:max_length]
        if any(label != IGNORE for label in labels):
            out.append(Example(ids, labels))
    return out


def text_examples(tokenizer, texts: list[str], max_length: int) -> list[Example]:
    """Plain language modelling: every token carries loss."""
    out = []
    for text in texts:
        ids = tokenizer(text.strip() + tokenizer.eos_token, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) > 1:
            out.append(Example(ids, list(ids)))
    return out


def split_held_out(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A random held-out split with at least one example on each side (when there are two or more)."""
    if len(examples) < 2:
        raise ValueError(f"need at least 2 examples for a training and a held-out split, got {len(examples)}")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_eval = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, e in enumerate(batch):
        ids[r, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[r, : len(e.labels)] = torch.tensor(e.labels)
        mask[r, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _summed_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Sum of token losses and the number of tokens that carry loss (so batches weigh by tokens)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((targets != IGNORE).sum())


@torch.inference_mode()
def mean_loss(model, tokenizer, examples: list[Example], batch_size: int = 8) -> float:
    """Token-weighted mean loss over examples."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = _summed_loss(model, collate(examples[start : start + batch_size], tokenizer.pad_token_id))
        total, count = total + loss.item(), count + n
    model.train(was_training)
    return total / max(count, 1)


# --- training --------------------------------------------------------------------------------------------------


def prepare_model(model, settings: TrainSettings):
    """Wrap with LoRA adapters (only they train), or train every weight."""
    if settings.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    return get_peft_model(model, config)


def save_checkpoint(model, tokenizer, folder: Path, base_model: str, settings: TrainSettings) -> Path:
    """An adapter (LoRA) or a whole model (full), plus the tokenizer and the name of the base model."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / BASE_FILE).write_text(json.dumps({"base_model": base_model, "method": settings.method}))
    return folder


def train(
    model,
    tokenizer,
    train_set: list[Example],
    held_out: list[Example],
    settings: TrainSettings,
    out_dir: Path,
    base_model: str,
    on_epoch=None,
) -> tuple[object, TrainResult]:
    """Train and return (the trained model, its history). `on_epoch(record)` is called after each epoch."""
    torch.manual_seed(settings.seed)
    model = prepare_model(model, settings)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / settings.train_batch_size) / settings.grad_accum)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(settings.warmup_ratio * total_steps), total_steps)
    rng = np.random.default_rng(settings.seed)
    result, best, waited = TrainResult(), math.inf, 0
    out_dir = Path(out_dir)
    for epoch in range(settings.epochs):
        order = rng.permutation(len(train_set))
        batches = [order[s : s + settings.train_batch_size] for s in range(0, len(order), settings.train_batch_size)]
        epoch_loss, epoch_tokens = 0.0, 0
        with tqdm(total=len(batches), desc=f"finetune epoch {epoch + 1}/{settings.epochs}", leave=False) as bar:
            for i, rows in enumerate(batches):
                loss_sum, n = _summed_loss(model, collate([train_set[r] for r in rows], tokenizer.pad_token_id))
                (loss_sum / max(n, 1) / settings.grad_accum).backward()
                epoch_loss, epoch_tokens = epoch_loss + loss_sum.item(), epoch_tokens + n
                if (i + 1) % settings.grad_accum == 0 or i + 1 == len(batches):
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum.item() / max(n, 1):.3f}")
        record = {
            "epoch": epoch,
            "train_loss": epoch_loss / max(epoch_tokens, 1),
            "eval_loss": mean_loss(model, tokenizer, held_out),
            "learning_rate": scheduler.get_last_lr()[0],
        }
        checkpoint = save_checkpoint(model, tokenizer, out_dir / f"epoch_{epoch:02d}", base_model, settings)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if record["eval_loss"] < best:
            best, waited = record["eval_loss"], 0
            result.best_epoch, result.best_checkpoint = epoch, checkpoint
        else:
            waited += 1
            if waited >= settings.patience:
                result.stopped_early = epoch + 1 < settings.epochs
                break
    best_dir = out_dir / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    shutil.copytree(result.best_checkpoint, best_dir)
    result.best_checkpoint = best_dir
    return model, result

