"""A transformers backend: batched generation with per-row sampling settings, and answer scoring by log-probability.

On 2 CPU cores batching is the biggest lever (one sequence decodes at ~12 tokens/s, a batch of 16 at ~60-70 in
total), so every candidate of every expert that shares this backend goes into one `generate` call. transformers
takes one temperature / top_p for a whole batch; the per-row settings are applied by `PerRowSampling` instead, and
each row's own max-new-tokens by `PerRowTokenBudget`.
"""

import copy

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

from models.backend import Generation, SamplingSettings
from models.devices import default_score_batch
from models.resolve import resolve_model


class PerRowSampling(LogitsProcessor):
    """Per-row frequency/presence penalties (OpenAI semantics, over the tokens generated so far), temperature,
    nucleus (top-p) filtering and the draw itself, as one logits processor for a whole batch.

    It samples here, among each row's `top_k` most likely tokens, and hands generate() a row that is -inf except
    at the drawn token, so generate() runs greedy and its argmax just reads the draw. That keeps every
    full-vocabulary pass out of the step but one top-k: a full sort (49k tokens) per row and generate()'s own
    softmax and multinomial over the whole vocabulary cost as much as the model's forward pass at batch 16.
    """

    def __init__(self, settings: list[SamplingSettings], prompt_length: int, device: torch.device, top_k: int = 256):
        def column(name):
            return torch.tensor([getattr(s, name) for s in settings], dtype=torch.float32, device=device)[:, None]

        self.temperature = column("temperature").clamp_min(1e-4)
        self.top_p = column("top_p")
        self.frequency_penalty = column("frequency_penalty")
        self.presence_penalty = column("presence_penalty")
        self.prompt_length = prompt_length
        self.top_k = top_k

    def penalized(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Scores after the penalties, which touch only the generated tokens: each occurrence costs the
        frequency penalty, each distinct token the presence penalty once (scatter writes repeated indices once)."""
        scores = scores.float()
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1]:
            scores = scores.scatter_add(1, generated, (-self.frequency_penalty).expand_as(generated).contiguous())
            scores = scores.scatter(1, generated, scores.gather(1, generated) - self.presence_penalty)
        return scores

    def distribution(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's sampling weights over its `top_k` most likely tokens (most likely first) and their ids."""
        top, index = self.penalized(input_ids, scores).topk(min(self.top_k, scores.shape[-1]), dim=-1)
        probs = (top / self.temperature).softmax(dim=-1)
        # Drop a token once the mass before it already reaches top_p (the most likely token always stays).
        return probs.masked_fill((probs.cumsum(dim=-1) - probs) >= self.top_p, 0.0), index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs, index = self.distribution(input_ids, scores)
        drawn = index.gather(1, torch.multinomial(probs, 1))
        return torch.full_like(scores, float("-inf"), dtype=torch.float32).scatter_(1, drawn, 0.0)


class PerRowTokenBudget(StoppingCriteria):
    """Stop each row at its own max-new-tokens (the batch's `max_new_tokens` is the largest of them)."""

    def __init__(self, budgets: list[int], prompt_length: int, device: torch.device):
        self.budgets = torch.tensor(budgets, device=device)
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.prompt_length) >= self.budgets


class StepProgress(StoppingCriteria):
    """Advances a progress bar once per decoding step; never stops anything."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class TransformersBackend:
    """The `Backend` contract (models.backend) in this process, with transformers; also the weights and tokenizer
    that training and evaluation use."""

    def __init__(self, name: str = "smollm2", dtype: torch.dtype = torch.float32, device: str = "cpu"):
        local = resolve_model(name)
        self.name = name
        kwargs = {"gguf_file": local.gguf_file} if local.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(local.folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(local.folder, dtype=dtype, **kwargs)
        if local.adapter is not None:  # a tuned LoRA adapter: merged once, so inference costs what the base does
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, local.adapter).merge_and_unload()
        self.model = model.to(device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = str(self.model.device)

    @property
    def has_chat_template(self) -> bool:
        return bool(self.tokenizer.chat_template)

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The model's own chat format for one user turn, ending where the assistant's answer starts."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # --- generation ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompts: list[str],
        settings: list[SamplingSettings],
        stop: list[str] | None = None,
        seed: int | None = None,
        desc: str = "generate",
    ) -> list[Generation]:
        """One sampled completion per prompt, all rows in one batched call, each row with its own settings."""
        if len(prompts) != len(settings):
            raise ValueError(f"{len(prompts)} prompts but {len(settings)} sampling settings")
        if not prompts:
            return []
        if seed is not None:
            torch.manual_seed(seed)
        tok = self.tokenizer
        tok.padding_side = "left"  # decoder-only batches pad on the left so every row continues at the end
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_length = batch["input_ids"].shape[1]
        budgets = [s.max_new_tokens for s in settings]
        config = GenerationConfig(
            do_sample=False,  # PerRowSampling draws each row's token with its own settings; greedy reads it
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max(budgets),
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        with tqdm(total=max(budgets), desc=desc, unit="step", leave=False) as bar:
            criteria = [PerRowTokenBudget(budgets, prompt_length, self.device), StepProgress(bar)]
            if stop:
                criteria.append(StopStringCriteria(tok, stop))
            out = self.model.generate(
                **batch,
                generation_config=config,
                logits_processor=LogitsProcessorList([PerRowSampling(settings, prompt_length, self.device)]),
                stopping_criteria=StoppingCriteriaList(criteria),
            )
        new = out[:, prompt_length:]
        # A finished row is padded with pad_token_id (here the EOS token) for the rest of the batch.
        finished = (new == tok.pad_token_id) | (new == tok.eos_token_id)
        lengths = torch.where(finished.any(dim=1), finished.int().argmax(dim=1), new.shape[1]).tolist()
        return [
            Generation(tok.decode(row[:n], skip_special_tokens=True), int(n)) for row, n in zip(new, lengths)
        ]

    # --- scoring ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def option_logprobs(
        self, prompts: list[str], options: list[str], score_batch_size: int | None = None, desc: str = "score",
        reuse_prefix: bool = True,
    ) -> np.ndarray:
        """log P(option | prompt) for every prompt and option, by forward passes only (no generation).

        When every option is a single token, one row per prompt suffices: the options are read off the next-token
        distribution. Otherwise each (prompt, option) pair is a row and the option's token log-probs are summed.
        The tokens every row starts with (a judge's instruction) are computed once and their KV cache is shared by
        all rows (`reuse_prefix`; same numbers in float32, ~2x faster for judge prompts). Returns an array of
        shape (len(prompts), len(options)).
        """
        score_batch_size = score_batch_size or default_score_batch(self.device)
        tok = self.tokenizer
        option_ids = [tok(o, add_special_tokens=False)["input_ids"] for o in options]
        prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        single = all(len(ids) == 1 for ids in option_ids)
        if single:
            rows = [(p, i, None) for i, p in enumerate(prompt_ids)]
        else:
            rows = [(p + o, i, k) for i, p in enumerate(prompt_ids) for k, o in enumerate(option_ids)]
        # Every row must keep, after the shared prefix, the positions whose logits are read.
        last_needed = min(len(ids) - (1 if single else len(option_ids[k]) + 1) for ids, _, k in rows)
        shared = min(_common_prefix_length([ids for ids, _, _ in rows]), last_needed) if reuse_prefix else 0
        prefix_cache = None
        if shared >= MIN_SHARED_PREFIX:
            prefix = torch.tensor([rows[0][0][:shared]], device=self.device)
            prefix_cache = self.model(input_ids=prefix, use_cache=True).past_key_values
        else:
            shared = 0
        result = np.zeros((len(prompts), len(options)))
        order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))  # similar lengths share a batch: less padding
        with tqdm(total=len(rows), desc=desc, unit="row", leave=False) as bar:
            for start in range(0, len(order), score_batch_size):
                chunk = [rows[r] for r in order[start : start + score_batch_size]]
                # The positions whose next-token distribution is read: the last one for single-token options, the
                # ones before each option token otherwise (counted from the end of the shared prefix).
                reads = [[len(ids) - 1 - shared] if single else
                         list(range(len(ids) - len(option_ids[k]) - 1 - shared, len(ids) - 1 - shared))
                         for ids, _, k in chunk]
                logprobs = self._suffix_logprobs([ids[shared:] for ids, _, _ in chunk], reads, shared, prefix_cache)
                for (ids, i, k), row in zip(chunk, logprobs):
                    if single:
                        result[i] = row[0, [o[0] for o in option_ids]].cpu().numpy()
                    else:
                        n = len(option_ids[k])
                        result[i, k] = row[torch.arange(n), torch.tensor(ids[-n:])].sum().item()
                bar.update(len(chunk))
        return result

    def _suffix_logprobs(self, suffixes: list[list[int]], reads: list[list[int]], shared: int,
                         prefix_cache) -> list[torch.Tensor]:
        """Log-softmax over the vocabulary at the `reads` positions of each suffix (one tensor of shape
        (len(reads[r]), vocab) per row). The rows are right-padded (their real tokens keep positions
        shared..shared+n-1) and continue from the shared prefix's cache when there is one. Only the read positions
        go through the output layer: over a whole judge prompt it cost a fifth of the FLOPs, and the log-softmax
        over every position moved ~100 MB per batch of 16."""
        width = max(len(ids) for ids in suffixes)
        input_ids = torch.full((len(suffixes), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(suffixes), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        keep = torch.zeros((len(suffixes), width), dtype=torch.bool)
        for r, ids in enumerate(suffixes):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            mask[r, shared : shared + len(ids)] = 1
            keep[r, reads[r]] = True
        kwargs = {}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)  # the forward pass appends to it
            cache.batch_repeat_interleave(len(suffixes))
            positions = torch.arange(shared, shared + width, device=self.device)[None].expand(len(suffixes), -1)
            kwargs = {"past_key_values": cache, "position_ids": positions}
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device), **kwargs}
        keep = keep.to(self.device)
        if self._plain_output_layer():
            hidden = self.model.base_model(**inputs).last_hidden_state
            logits = self._read_logits(hidden[keep])  # row-major: row 0's read positions ascending, then row 1's, ...
        else:
            logits = self.model(**inputs, logits_to_keep=keep).logits.reshape(-1, self.model.config.vocab_size)
        return logits.float().log_softmax(dim=-1).split([len(r) for r in reads])

    def _plain_output_layer(self) -> bool:
        """The model's logits are its output layer applied to the last hidden state, nothing more (Llama, SmolLM2;
        not models that scale or soft-cap their logits)."""
        config = self.model.config
        return getattr(config, "final_logit_softcapping", None) is None and getattr(config, "logit_scale", None) is None

    def _read_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer at the read positions, in float32. In bfloat16 the logits keep 8 significant bits: a
        judge's log-odds (a difference of two logits near 15) then move in steps of 0.06-0.13, so its scores take a
        few dozen values, and a calibration that stretches them (anchors) leaves a handful of levels on the grid.
        A float32 copy of the output layer costs 113 MB for SmolLM2 and a few milliseconds per batch."""
        head = self.model.get_output_embeddings()
        if head.weight.dtype == torch.float32:
            return head(hidden)
        key = (head.weight.data_ptr(), head.weight._version)  # a changed weight (training) makes a new copy
        if getattr(self, "_head32", None) is None or self._head32[0] != key:
            self._head32 = (key, head.weight.float(), None if head.bias is None else head.bias.float())
        return torch.nn.functional.linear(hidden.float(), self._head32[1], self._head32[2])


MIN_SHARED_PREFIX = 8  # below this, computing a prefix apart saves less than it costs


def _common_prefix_length(rows: list[list[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for j in range(n):
        if any(r[j] != first[j] for r in rows):
            return j
    return n


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
