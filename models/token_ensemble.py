"""A token-level ensemble (seed 002's "voting and weighted averaging" at the finest grain): one answer decoded from
several experts' averaged next-token distributions, on the in-process transformers backend.

Each expert's prompt (its persona as system prompt, the task) is one row of one batch. At every step each row's
next-token distribution is computed with that expert's own sampling settings (penalties, temperature, top-p:
`PerRowSampling.distribution`), the rows' distributions are averaged (weighted by the experts' weights), one token
is drawn from the average and appended to every row, so all rows stay on the same text. The answer ends when the
drawn token ends the text, a stop string appears, or after `max_new_tokens`.

Only an in-process model can do this: it needs every expert's full next-token distribution at every step, all
experts decoding in lockstep with one tokenizer. A server backend (OpenAI-compatible) returns sampled text and at
most a few top log-probabilities per token, one request per answer, and experts on different servers may not even
share a vocabulary; what it can combine is whole answers (the `vote`, `weighted` and `consensus` selections).
"""

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteriaList, StopStringCriteria

from models.backend import Generation, SamplingSettings
from models.transformers_backend import PerRowSampling, PerRowTokenBudget


class AveragedNextToken(LogitsProcessor):
    """Every row's distribution under its own settings, averaged with `weights` over the rows of its group (one
    group: one answer); one token drawn per group from its average and forced in each of the group's rows (the
    row is -inf except at that token, and generate() runs greedy)."""

    def __init__(self, settings: list[SamplingSettings], groups: list[int], prompt_length: int, device: torch.device,
                 weights: list[float] | None = None):
        self.sampling = PerRowSampling(settings, prompt_length, device)
        self.groups = torch.tensor(groups, dtype=torch.long, device=device)
        self.count = int(self.groups.max()) + 1
        w = torch.tensor(weights if weights is not None else [1.0] * len(settings), dtype=torch.float32,
                         device=device)
        self.weights = w / torch.zeros(self.count, device=device).index_add_(0, self.groups, w)[self.groups]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs, index = self.sampling.distribution(input_ids, scores)
        probs = probs / probs.sum(dim=-1, keepdim=True)  # each row a distribution after its top-p cut
        full = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device).scatter_(1, index, probs)
        average = torch.zeros((self.count, scores.shape[1]), dtype=torch.float32, device=scores.device)
        average.index_add_(0, self.groups, self.weights[:, None] * full)
        tokens = torch.multinomial(average, 1)[:, 0]
        forced = torch.full(scores.shape, float("-inf"), dtype=torch.float32, device=scores.device)
        forced[torch.arange(len(forced), device=scores.device), tokens[self.groups]] = 0.0
        return forced


@torch.inference_mode()
def ensemble_generate(backend, prompts: list[str], settings: list[SamplingSettings], max_new_tokens: int,
                      groups: list[int] | None = None, weights: list[float] | None = None,
                      stop: list[str] | None = None, seed: int | None = None) -> list[Generation]:
    """One answer per group (`groups`: each row's group, 0..G-1; default: all rows one group) from the averaged
    next-token distributions of its rows (one per expert: its prompt, its `settings`, its `weights`), every
    group in one batched `generate` on a `TransformersBackend`. A group's `new_tokens` is its answer's length;
    computing it decoded that many positions in each of its rows, as one sampled answer per row would."""
    if not hasattr(backend, "model") or not hasattr(backend, "tokenizer"):
        raise ValueError(f"ensemble=tokens needs an in-process transformers model; {getattr(backend, 'name', backend)!r}"
                         " is a server backend, which can combine whole answers only (selection vote, weighted, "
                         "consensus)")
    groups = [0] * len(prompts) if groups is None else list(groups)
    if not prompts or len(settings) != len(prompts) or len(groups) != len(prompts):
        raise ValueError(f"ensemble: expected one sampling setting and one group per prompt, got {len(prompts)} "
                         f"prompts, {len(settings)} settings and {len(groups)} groups")
    if seed is not None:
        torch.manual_seed(seed)
    tok = backend.tokenizer
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(backend.device)
    prompt_length = batch["input_ids"].shape[1]
    device = backend.model.device
    averaged = AveragedNextToken(settings, groups, prompt_length, device, weights)
    criteria = [PerRowTokenBudget([max_new_tokens] * len(prompts), prompt_length, device)]
    if stop:
        criteria.append(StopStringCriteria(tok, stop))
    config = GenerationConfig(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    out = backend.model.generate(**batch, generation_config=config, logits_processor=LogitsProcessorList([averaged]),
                                 stopping_criteria=StoppingCriteriaList(criteria))
    answers = []
    for group in range(averaged.count):
        new = out[groups.index(group), prompt_length:].tolist()  # every row of a group holds the same tokens
        ended = [i for i, t in enumerate(new) if t in (tok.pad_token_id, tok.eos_token_id)]
        new = new[: ended[0]] if ended else new
        answers.append(Generation(tok.decode(new, skip_special_tokens=True), len(new)))
    return answers
