"""The engine interface shared by the sampling and evaluation stages.

TRL offers no offline sampler (its vLLM integration serves online RL), so conj-train keeps its own
minimal one. An engine turns fully rendered prompts (chat template already applied) into ``n``
generations each, one seed per generation, and reports token counts and why each one stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. Defaults are Con-J's repeated-sampling values (docs/method.md#repeated-sampling)."""

    temperature: float = 1.2
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.2
    max_new_tokens: int = 512
    # Greedy decoding ignores temperature/top-p/top-k and the seeds.
    greedy: bool = False
    # Structured decoding: the generated text (after the prefill) must match this regular expression.
    # Opt-in at evaluation and serving only (never when sampling training judgments, where an
    # unparseable judgment is a Con-J negative); an engine that cannot enforce it refuses it.
    regex: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """One rendered prompt and the seeds of its samples (``len(seeds)`` samples are drawn)."""

    key: str
    prompt: str
    seeds: Sequence[int]
    # Optional text forced at the start of the assistant turn (e.g. ' {"原因":'); it is part of the
    # model input, not of the returned text.
    prefill: str = ""
    # The chat turns ``prompt`` was rendered from, for engines that send turns rather than text (the
    # openai engine's chat API); None when only the rendered text is known.
    messages: Sequence[Mapping[str, str]] | None = None


@dataclass
class Generation:
    """One generated sample."""

    key: str
    index: int
    seed: int
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    extra: dict = field(default_factory=dict)


class Engine(Protocol):
    """What the sampling and evaluation stages need from an engine."""

    name: str

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` as the engine will see it."""
        ...

    @property
    def max_context(self) -> int:
        """Longest prompt + generation the engine's model accepts."""
        ...

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        """Generate ``len(req.seeds)`` samples for every request, returned in request order."""
        ...


# Why a prompt got no generation: a reason written into sample counts and eval records.
PROMPT_TOO_LONG = "prompt_too_long"


def prompt_too_long(engine: Engine, prompt: str, prefill: str, max_new_tokens: int) -> bool:
    """Whether ``prompt`` + ``prefill`` + ``max_new_tokens`` overflow the engine's context.

    Such prompts are skipped and counted by the stages, never truncated (a cut judge prompt would
    lose one of the answers)."""
    return engine.count_tokens(prompt + prefill) + max_new_tokens > engine.max_context
