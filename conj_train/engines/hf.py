"""The default engine: Hugging Face transformers with a KV-cached sampling loop of its own.

Why not ``model.generate``: with ``num_return_sequences=n`` it prefills the same prompt n times, and on
small models its per-step overhead dominates. This loop runs each prompt once, fans its KV cache out
to the n samples (``batch_repeat_interleave`` on the cache), then feeds one token per row per step
through the model's own forward; finished rows leave the batch. Full-attention cache layers write into
a preallocated buffer instead of ``DynamicLayer``'s per-step ``torch.cat``. The logits pipeline is
``generate``'s (repetition penalty, then temperature, top-k, top-p, with transformers' semantics);
greedy is the penalized argmax. Structured decoding (``SamplingParams.regex``, opt-in) masks each
row's logits to the tokens its llguidance matcher allows before that pipeline
(:class:`conj_train.inference.structured_decoding.TokenGuide`). ``bench/sample.py`` measures this loop against ``generate``. The
logits pipeline lives in :mod:`conj_train.engines.sampling`, the cached decoder in
:mod:`conj_train.engines.kv_decoder`; this module holds the engine (requests, packing, seeds, texts).

Reproducibility. Each sample owns a ``torch.Generator`` seeded with its seed, which draws one uniform
per step up front; a token is the inverse-CDF pick of that uniform on the filtered distribution. A unit
of work is one request (prompt + prefill and its seeds): never padded, never mixed with other prompts.
So on one device type, dtype and library versions, a request's texts are bitwise the same whatever
other requests, order, sharding or restarts surround it (tested on CPU fp32). Not guaranteed:
- the same seed under a different seeds list: a request's rows share matrix products, and CPU (measured:
  row 0 of a GEMM differs in the last bit between 1 row and 2+ rows) and GPU GEMMs round differently
  for different row counts, so a rare near-tie can flip a token;
- CPU vs GPU, or across GPU models (different RNG streams and kernels);
- packing prompts (``batch_tokens > 0``: several requests per forward, prompts of different lengths
  laid out with masked holes) breaks the cross-request guarantee for the same reason, which is why
  it is off by default; it is the faster mode, especially on small models (``bench/sample.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from conj_train.engines.base import Generation, GenerationRequest, SamplingParams
from conj_train.engines.kv_decoder import KVDecoder
from conj_train.engines.sampling import check_params, next_tokens
from conj_train.errors import ConjError, loading_errors
from conj_train.inference.loading import check_model_size
from conj_train.tokens import load_tokenizer

_DTYPES = ("auto", "float32", "float16", "bfloat16")


class HFEngine:
    """Generate judgments with a local or cached Hugging Face causal LM (see the module docstring).

    ``dtype``: "auto" (the checkpoint's), "float32", "float16" or "bfloat16". ``device``: defaults to
    CUDA when available. ``batch_tokens``: 0 (default) decodes one request per forward; above 0, requests
    are packed (in order of prompt length) while their rows x (longest prompt + max_new_tokens) stay
    within it: more throughput, but texts then depend on the pack (module docstring).
    ``threads``: ``torch.set_num_threads`` for CPU runs. Prompts longer than the context are refused,
    never truncated; :meth:`fits` lets the caller skip them first.
    """

    name = "hf"

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        batch_tokens: int = 0,
        threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if dtype not in _DTYPES:
            raise ConjError(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
        if batch_tokens < 0:
            raise ConjError(f"batch_tokens must be >= 0, got {batch_tokens}")
        model_path = os.path.expanduser(model_path)
        if not os.path.isdir(model_path) and _looks_local(model_path):
            raise ConjError(f"model path not found: {model_path}")
        check_model_size(model_path)
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = load_tokenizer(model_path, trust_remote_code)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype),
                                  "device_map": self.device}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust_remote_code,
                                                         **kwargs)
        except loading_errors() as err:
            raise ConjError(f"cannot load a causal LM from {model_path}: {_first_line(err)}") from err
        self.model = model.eval()
        # The KV cache's dtype when it differs from the model's: float32 where decode attention runs
        # in float32 (KVDecoder's kv_dtype).
        self._kv_dtype = None
        if not attn_implementation:
            from conj_train.engines.cpu_attention import use_for

            if use_for(self.model):
                self._kv_dtype = torch.float32
        self.batch_tokens = batch_tokens
        # Public so that benchmarks can force full-length generations on both sides.
        self.stop_token_ids: set[int] = _stop_ids(self.tokenizer, self.model)
        # Tokens whose log-probabilities (softmax of the raw logits) every generated position records:
        # a judge's verdict digits, read where they were generated instead of by a second forward
        # (conj_train.inference.probability.generated_read). Empty: nothing recorded.
        self.watch_token_ids: tuple[int, ...] = ()

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` (no special tokens added: the chat template already has them)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """Token ids of the model input of ``request``: its prompt followed by its prefill."""
        return list(self.tokenizer(request.prompt + request.prefill, add_special_tokens=False)["input_ids"])

    @property
    def max_context(self) -> int:
        """Longest prompt + generation the model accepts (its position limit)."""
        cfg = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if getattr(cfg, attr, None):
                return int(getattr(cfg, attr))
        return int(self.tokenizer.model_max_length)

    def fits(self, request: GenerationRequest, params: SamplingParams) -> bool:
        """Whether prompt + prefill + ``max_new_tokens`` fit the context; the stage skips requests that
        don't (nothing is truncated, and :meth:`generate` refuses them)."""
        return len(self.prompt_ids(request)) + params.max_new_tokens <= self.max_context

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        """Generate ``len(req.seeds)`` samples for every request, returned in request order."""
        done = dict(self._run(requests, params))
        return [g for i in range(len(requests)) for g in done[i]]

    def generate_iter(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> Iterator[list[Generation]]:
        """Yield each request's samples as soon as they are done: in request order, except that with
        packing on, requests come in packs of equal prompt length."""
        for _index, gens in self._run(requests, params):
            yield gens

    def _run(
        self, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> Iterator[tuple[int, list[Generation]]]:
        """Yield ``(request index, its generations)`` unit by unit."""
        import torch

        check_params(params)
        encoded = []
        for req in requests:
            ids = self.prompt_ids(req)
            if not ids:
                raise ConjError(f"request {req.key}: empty prompt")
            if len(ids) + params.max_new_tokens > self.max_context:
                raise ConjError(f"request {req.key}: {len(ids)} prompt tokens + {params.max_new_tokens} new "
                                f"tokens exceed the model's context of {self.max_context}")
            encoded.append(ids)
        with torch.inference_mode():
            for unit in self._units(requests, encoded, params):
                if not requests[unit[0]].seeds:
                    yield unit[0], []
                    continue
                outs = self._decode([encoded[i] for i in unit], [requests[i] for i in unit], params)
                yield from zip(unit, outs, strict=True)

    def _units(
        self, requests: Sequence[GenerationRequest], encoded: list[list[int]], params: SamplingParams
    ) -> Iterator[list[int]]:
        """Group request indices into decode units: one request each, or packs if enabled (a request
        without seeds is always a unit of its own).

        Packs hold prompts of one length when the model has layers other than full attention (they
        cannot be laid out with holes); otherwise requests are packed in order of prompt length, so a
        pack's prompts differ little and its buffer has few holes. A pack's cost is its rows x
        (longest prompt + max_new_tokens)."""
        if not self.batch_tokens:
            yield from ([i] for i in range(len(requests)))
            return
        groups: dict[int, list[int]] = {}
        mixed = self._full_attention()
        for i in sorted(range(len(requests)), key=lambda i: len(encoded[i])):
            if requests[i].seeds:
                groups.setdefault(0 if mixed else len(encoded[i]), []).append(i)
            else:
                yield [i]
        for members in groups.values():
            unit: list[int] = []
            rows = 0
            for i in members:
                n = _rows(requests[i], params)
                if unit and (rows + n) * (len(encoded[i]) + params.max_new_tokens) > self.batch_tokens:
                    yield unit
                    unit, rows = [], 0
                unit.append(i)
                rows += n
            if unit:
                yield unit

    def _full_attention(self) -> bool:
        """Whether every cache layer of the model is plain full attention (packable with holes)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.model.config).layers)

    def _decode(
        self, prompts: list[list[int]], reqs: list[GenerationRequest], params: SamplingParams
    ) -> list[list[Generation]]:
        """Decode one unit; every request's rows start from its prompt's shared prefill."""
        import torch

        rows = [_rows(r, params) for r in reqs]
        capacity = max(len(p) for p in prompts) + params.max_new_tokens
        dec = KVDecoder(self.model, prompts, rows, capacity=capacity, kv_dtype=self._kv_dtype)
        vocab = dec.logits.shape[-1]
        device = dec.logits.device
        owner = [(k, j) for k, n in enumerate(rows) for j in range(n)]
        seen = torch.zeros((len(prompts), vocab), dtype=torch.bool, device=device)
        for k, prompt in enumerate(prompts):
            seen[k, torch.tensor([t for t in prompt if t < vocab], dtype=torch.long, device=device)] = True
        seen = torch.repeat_interleave(seen, torch.tensor(rows, device=device), dim=0)
        # A row's whole random stream (one uniform per step) comes from its own seed, drawn up front.
        uniforms = None if params.greedy else torch.stack([
            torch.rand(params.max_new_tokens, device=device,
                       generator=torch.Generator(device=device).manual_seed(int(reqs[k].seeds[j])))
            for k, j in owner
        ])
        stop = torch.tensor(sorted(self.stop_token_ids), dtype=torch.long, device=device)
        live = list(range(len(owner)))
        guide = None
        if params.regex is not None:
            from conj_train.inference.structured_decoding import TokenGuide

            guide = TokenGuide(self.tokenizer, vocab, sorted(self.stop_token_ids), params.regex, len(owner))
        out_tokens: list[list[int]] = [[] for _ in owner]
        stopped = [False] * len(owner)
        watch = torch.tensor(self.watch_token_ids, dtype=torch.long, device=device) if self.watch_token_ids else None
        watched: list[list[list[float]]] = [[] for _ in owner]
        logits = dec.logits
        for step in range(params.max_new_tokens):
            if watch is not None:
                # Before any masking or penalty: the model's own distribution at this position.
                values = (logits[:, watch] - logits.logsumexp(-1, keepdim=True)).tolist()
                for row, lp in zip(live, values, strict=True):
                    watched[row].append(lp)
            if guide is not None:
                logits = guide.mask(logits, live)
            tokens = next_tokens(logits, seen, params, None if uniforms is None else uniforms[:, step])
            if guide is not None:
                guide.consume(live, tokens.tolist())
            seen[torch.arange(len(live), device=device), tokens] = True
            hits = torch.isin(tokens, stop).tolist()
            for row, tok, hit in zip(live, tokens.tolist(), hits, strict=True):
                out_tokens[row].append(tok)
                stopped[row] = hit
            keep = [p for p, hit in enumerate(hits) if not hit]
            if not keep or step == params.max_new_tokens - 1:
                break
            if len(keep) < len(live):
                idx = torch.tensor(keep, dtype=torch.long, device=device)
                dec.keep(idx)
                tokens, seen = tokens[idx], seen[idx]
                live = [live[p] for p in keep]
                if uniforms is not None:
                    uniforms = uniforms[idx]
            logits = dec.step(tokens)
        return self._package(reqs, rows, prompts, out_tokens, stopped, params, watched if watch is not None else None)

    def _package(
        self,
        reqs: list[GenerationRequest],
        rows: list[int],
        prompts: list[list[int]],
        out_tokens: list[list[int]],
        stopped: list[bool],
        params: SamplingParams,
        watched: list[list[list[float]]] | None = None,
    ) -> list[list[Generation]]:
        results: list[list[Generation]] = []
        first = 0
        for req, n, prompt in zip(reqs, rows, prompts, strict=True):
            gens = []
            for j, seed in enumerate(req.seeds):
                # Greedy decodes one row per request: every seed gets the same text.
                row = first + (0 if params.greedy else j)
                toks = out_tokens[row]
                # Special tokens are skipped as vLLM does by default (Con-J's outputs came from vLLM).
                text = self.tokenizer.decode(toks[:-1] if stopped[row] else toks, skip_special_tokens=True,
                                             clean_up_tokenization_spaces=False)
                extra = {} if watched is None else {
                    "prompt_token_ids": prompt, "token_ids": toks, "watch_token_ids": list(self.watch_token_ids),
                    "watched_logprobs": watched[row]}
                gens.append(Generation(
                    key=req.key, index=j, seed=int(seed), text=text,
                    finish_reason="stop" if stopped[row] else "length",
                    prompt_tokens=len(prompt), completion_tokens=len(toks), extra=extra,
                ))
            results.append(gens)
            first += n
        return results


def _rows(req: GenerationRequest, params: SamplingParams) -> int:
    return 1 if params.greedy else len(req.seeds)


def _looks_local(path: str) -> bool:
    # A hub id is "name" or "org/name"; anything else (absolute, ./, deeper, backslashes) is a folder.
    return os.path.isabs(path) or path.startswith(".") or path.count("/") > 1 or "\\" in path


def _first_line(err: Exception) -> str:
    # The CLI prints a ConjError as one line.
    return (str(err).splitlines() or [type(err).__name__])[0]


def _stop_ids(tokenizer: Any, model: Any) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids
