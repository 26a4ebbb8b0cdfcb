"""The contract every model backend keeps: what the search, the judges and `ask` may call on a model.

Today one backend implements it (`models.transformers_backend`, in this process); a server backend speaks the same
contract over HTTP. Code above `models/` types its models as `Backend` and calls nothing else on them (training,
which needs the weights, takes a `TransformersBackend` by name).
"""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SamplingSettings:
    """How one row is sampled (OpenAI semantics for the penalties)."""

    temperature: float = 0.9
    top_p: float = 0.95
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    max_new_tokens: int = 64


@dataclass(frozen=True)
class Generation:
    """One sampled completion and how many new tokens it took."""

    text: str
    new_tokens: int


@runtime_checkable
class Backend(Protocol):
    name: str  # the model name it was loaded by (see models.resolve)
    device: str  # where it computes: "cpu", "cuda:0", or the server it talks to

    @property
    def has_chat_template(self) -> bool:
        """Whether the model has a chat format of its own (else prompts are plain text)."""
        ...

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The model's chat format for one user turn, ending where the assistant's answer starts. A server backend on
        a chat endpoint returns a `str` subclass that also carries the messages (models.openai_backend.ChatPrompt);
        callers treat it as the text it is."""
        ...

    def generate(self, prompts: list[str], settings: list[SamplingSettings], stop: list[str] | None = None,
                 seed: int | None = None, desc: str = "generate") -> list[Generation]:
        """One sampled completion per prompt, each row with its own settings (`stop` strings end a row early)."""
        ...

    def option_logprobs(self, prompts: list[str], options: list[str], score_batch_size: int | None = None,
                        desc: str = "score", reuse_prefix: bool = True) -> np.ndarray:
        """log P(option | prompt) for every prompt and option: shape (len(prompts), len(options)). Rows per
        forward pass: `score_batch_size`, or what suits the device (models.devices)."""
        ...
