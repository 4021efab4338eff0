"""The default engine: Hugging Face transformers with a KV-cached sampling loop of its own.

Why not ``model.generate``: with ``num_return_sequences=n`` it prefills the same prompt n times, and on
small models its per-step overhead dominates. This loop runs each prompt once, fans its KV cache out
to the n samples (``batch_repeat_interleave`` on the cache), then feeds one token per row per step
through the model's own forward; finished rows leave the batch. Full-attention cache layers write into
a preallocated buffer instead of ``DynamicLayer``'s per-step ``torch.cat``. The logits pipeline is
``generate``'s (repetition penalty, then temperature, top-k, top-p, with transformers' semantics);
greedy is the penalized argmax. ``bench/sample.py`` measures this loop against ``generate``.

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

import functools
import inspect
import os
from collections.abc import Iterator, Sequence
from typing import Any

from conj_train.engines.base import Generation, GenerationRequest, SamplingParams
from conj_train.errors import ConjError, loading_errors

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def check_params(params: SamplingParams) -> None:
    """Reject decoding settings that transformers' processors would reject (or silently misuse)."""
    if params.max_new_tokens < 1:
        raise ConjError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if not params.repetition_penalty > 0:
        raise ConjError(f"repetition_penalty must be > 0, got {params.repetition_penalty}")
    if params.greedy:
        return
    if not params.temperature > 0:
        raise ConjError(f"temperature must be > 0 when sampling (use greedy), got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ConjError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise ConjError(f"top_k must be >= 0 (0 disables it), got {params.top_k}")


def penalize(logits: Any, seen: Any, penalty: float) -> Any:
    """Repetition penalty as transformers applies it: divide positive / multiply negative logits of
    the tokens marked in ``seen`` (prompt + generated so far, per row)."""
    import torch

    if penalty == 1.0:
        return logits
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def token_distribution(scores: Any, params: SamplingParams) -> tuple[Any, Any]:
    """Temperature, top-k and top-p as ``generate`` applies them, in that order, to penalized scores.

    Returns ``(ids, weights)``: the candidate token ids ``[rows, m]`` (None: the whole vocabulary in id
    order) and weights proportional to their probabilities, zero for candidates top-p removed. With
    top-k on, only the k best scores are softmaxed and sorted, which makes top-p cheap on large
    vocabularies; the distribution is that of transformers' warpers up to float rounding (and, for
    tied scores at the top-p boundary, up to which tie is dropped).
    """
    import torch

    if params.temperature != 1.0:
        scores = scores / params.temperature
    vocab = scores.shape[-1]
    ids = None
    k = min(params.top_k, vocab)
    if 0 < k < vocab:
        vals, ids = torch.topk(scores, k + 1)
        # transformers keeps every score equal to the k-th one: a (k+1)-th equal to it is a tie that
        # needs the full-vocab path.
        if bool((vals[:, k] == vals[:, k - 1]).any()):
            scores = scores.masked_fill(scores < vals[:, k - 1 : k], -float("inf"))
            ids = None
        else:
            scores, ids = vals[:, :k].flip(-1), ids[:, :k].flip(-1)
    if params.top_p < 1.0:
        if ids is None:
            scores, ids = torch.sort(scores, descending=False, stable=True)
        probs = scores.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) <= (1 - params.top_p)
        drop[..., -1:] = False
        return ids, probs.masked_fill(drop, 0.0)
    return ids, scores.softmax(dim=-1)


def sample(ids: Any, probs: Any, uniforms: Any) -> Any:
    """One inverse-CDF draw per row: ``uniforms[row]`` in [0, 1) picks a candidate in proportion to its
    weight in ``probs``."""
    import torch

    cdf = probs.cumsum(dim=-1)
    target = (uniforms * cdf[:, -1]).unsqueeze(-1)
    # right=True never lands on a zero-probability candidate; the clamp absorbs u * total rounding up.
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    return pick.squeeze(-1) if ids is None else ids.gather(1, pick).squeeze(-1)


def next_tokens(logits: Any, seen: Any, params: SamplingParams, uniforms: Any | None) -> Any:
    """The next token of every row: penalized argmax when greedy, else a draw with ``uniforms``."""
    scores = penalize(logits, seen, params.repetition_penalty)
    if params.greedy:
        return scores.argmax(dim=-1)
    return sample(*token_distribution(scores, params), uniforms)


class KVDecoder:
    """Prefill prompts once, fan each cache out to its rows, then feed one token per row per step.

    After construction ``logits`` holds the float32 next-token logits of every row ``[sum(rows),
    vocab]``; :meth:`step` advances all live rows by one token and :meth:`keep` drops finished rows.
    ``capacity`` (longest prompt + new tokens) lets full-attention layers write into a preallocated
    buffer instead of growing by ``torch.cat``. Prompts of one length are prefilled together and
    nothing is padded. Prompts of different lengths (only with ``capacity`` and a model whose layers
    are all full attention) are prefilled one by one and laid out left-aligned in one buffer: the
    holes between a short prompt and the first generated position are masked out of attention and
    each row keeps its own positions, so every row computes what it would alone, up to the rounding
    of a different batch shape.
    """

    def __init__(
        self, model: Any, prompts: Sequence[Sequence[int]], rows: Sequence[int], capacity: int = 0
    ) -> None:
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        lengths = [len(p) for p in prompts]
        self._model = model
        self._cache = DynamicCache(config=model.config)
        full = all(type(layer) is DynamicLayer for layer in self._cache.layers)
        if len(set(lengths)) != 1 and not (capacity and full):
            raise ValueError("KVDecoder packs prompts of different lengths only into a full-attention buffer")
        if capacity:
            # Sliding-window and other special layers keep their own class.
            self._cache.layers = [_buffer_layer_class()(capacity) if type(layer) is DynamicLayer else layer
                                  for layer in self._cache.layers]
        forward_args = inspect.signature(model.forward).parameters
        # transformers 5.24 renamed ``past_key_values`` to ``cache``; older 5.x only knows the old name.
        self._cache_kw = "cache" if "cache" in forward_args else "past_key_values"
        # The prefill needs the last position's logits only (remote-code models may lack the option).
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}
        device = model.device
        fan_out = torch.tensor(list(rows), device=device)
        self._mask = self._positions = None
        if len(set(lengths)) == 1:
            ids = torch.tensor([list(p) for p in prompts], dtype=torch.long, device=device)
            out = model(input_ids=ids, use_cache=True, **self._last_only, **{self._cache_kw: self._cache})
            logits = out.logits[:, -1].float()
            if len(prompts) == 1:
                self._cache.batch_repeat_interleave(int(rows[0]))
            else:
                owners = torch.repeat_interleave(torch.arange(len(prompts), device=device), fan_out)
                self._cache.batch_select_indices(owners)
        else:
            logits = self._prefill_each(prompts, fan_out, capacity)
        self.logits = torch.repeat_interleave(logits, fan_out, dim=0)

    def _prefill_each(self, prompts: Sequence[Sequence[int]], fan_out: Any, capacity: int) -> Any:
        """Prefill prompt by prompt into one left-aligned buffer; returns the prompts' last logits."""
        import torch
        from transformers import DynamicCache

        device = self._model.device
        longest = max(len(p) for p in prompts)
        caches, logits = [], []
        for prompt in prompts:
            cache = DynamicCache(config=self._model.config)
            ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
            out = self._model(input_ids=ids, use_cache=True, **self._last_only, **{self._cache_kw: cache})
            caches.append(cache)
            logits.append(out.logits[:, -1].float())
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        row_len = torch.repeat_interleave(lengths, fan_out)
        for i, layer in enumerate(self._cache.layers):
            k0, v0 = caches[0].layers[i].keys, caches[0].layers[i].values
            keys = k0.new_zeros((len(row_len), k0.shape[1], capacity, k0.shape[-1]))
            values = v0.new_zeros((len(row_len), v0.shape[1], capacity, v0.shape[-1]))
            first = 0
            for cache, n in zip(caches, fan_out.tolist(), strict=True):
                k, v = cache.layers[i].keys, cache.layers[i].values
                keys[first : first + n, :, : k.shape[-2]] = k
                values[first : first + n, :, : v.shape[-2]] = v
                first += n
            layer.load(keys, values, longest)
        positions = torch.arange(capacity, device=device)
        self._mask = (positions[None, :] < row_len[:, None]) | (positions[None, :] >= longest)
        self._positions = row_len.clone()
        return torch.cat(logits)

    def step(self, tokens: Any) -> Any:
        """Feed one token per live row; return the next float32 logits ``[rows, vocab]``."""
        extra: dict[str, Any] = {}
        if self._mask is not None:
            filled = self._cache.get_seq_length()
            extra = {"attention_mask": self._mask[:, : filled + 1].long(),
                     "position_ids": self._positions[:, None]}
            self._positions = self._positions + 1
        out = self._model(input_ids=tokens[:, None], use_cache=True, **extra, **{self._cache_kw: self._cache})
        self.logits = out.logits[:, -1].float()
        return self.logits

    def keep(self, index: Any) -> None:
        """Keep only the rows at ``index`` (a 1-D long tensor) in the cache and the current logits."""
        self._cache.batch_select_indices(index)
        self.logits = self.logits[index]
        if self._mask is not None:
            self._mask, self._positions = self._mask[index], self._positions[index]


@functools.cache
def _buffer_layer_class() -> type:
    import torch
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A full-attention cache layer over a preallocated ``[batch, heads, capacity, dim]`` buffer.

        ``DynamicLayer`` concatenates the whole cache at every step (O(length) copies per token, about a
        quarter of a decode step on small models); this one writes the new positions in place and hands
        attention a view of the filled part, which gives bitwise the same attention inputs.
        """

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self.filled = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            new = key_states.shape[-2]
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                shape = (*key_states.shape[:2], max(self.capacity, new), key_states.shape[-1])
                self._k = key_states.new_empty(shape)
                self._v = value_states.new_empty((*shape[:3], value_states.shape[-1]))
            if self.filled + new > self._k.shape[-2]:  # outgrown: double, like a list would
                grow = max(self.filled + new, 2 * self._k.shape[-2]) - self._k.shape[-2]
                self._k = torch.nn.functional.pad(self._k, (0, 0, 0, grow))
                self._v = torch.nn.functional.pad(self._v, (0, 0, 0, grow))
            self._k[:, :, self.filled : self.filled + new] = key_states
            self._v[:, :, self.filled : self.filled + new] = value_states
            self.filled += new
            self._refresh()
            return self.keys, self.values

        def load(self, keys: Any, values: Any, filled: int) -> None:
            """Take over ``[batch, heads, capacity, dim]`` buffers whose first ``filled`` positions count."""
            self.lazy_initialization(keys[:, :, :0], values[:, :, :0])
            self._k, self._v, self.filled = keys, values, filled
            self._refresh()

        def _refresh(self) -> None:
            self.keys = self._k[:, :, : self.filled]
            self.values = self._v[:, :, : self.filled]

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.filled:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._refresh()

        def batch_select_indices(self, indices: Any) -> None:
            if self.filled:
                self._k, self._v = self._k[indices], self._v[indices]
                self._refresh()

    return BufferLayer


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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in _DTYPES:
            raise ConjError(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
        if batch_tokens < 0:
            raise ConjError(f"batch_tokens must be >= 0, got {batch_tokens}")
        model_path = os.path.expanduser(model_path)
        if not os.path.isdir(model_path) and _looks_local(model_path):
            raise ConjError(f"model path not found: {model_path}")
        if threads:
            torch.set_num_threads(threads)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        except loading_errors() as err:
            raise ConjError(f"cannot load a tokenizer from {model_path}: {_first_line(err)}") from err
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConjError(f"the tokenizer of {model_path} has no chat template; judge prompts need one")
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
        if not attn_implementation:
            from conj_train.engines.cpu_attention import use_for

            use_for(self.model)
        self.batch_tokens = batch_tokens
        # Public so that benchmarks can force full-length generations on both sides.
        self.stop_token_ids: set[int] = _stop_ids(self.tokenizer, self.model)

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
        dec = KVDecoder(self.model, prompts, rows, capacity=capacity)
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
        out_tokens: list[list[int]] = [[] for _ in owner]
        stopped = [False] * len(owner)
        logits = dec.logits
        for step in range(params.max_new_tokens):
            tokens = next_tokens(logits, seen, params, None if uniforms is None else uniforms[:, step])
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
        return self._package(reqs, rows, prompts, out_tokens, stopped, params)

    def _package(
        self,
        reqs: list[GenerationRequest],
        rows: list[int],
        prompts: list[list[int]],
        out_tokens: list[list[int]],
        stopped: list[bool],
        params: SamplingParams,
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
                gens.append(Generation(
                    key=req.key, index=j, seed=int(seed), text=text,
                    finish_reason="stop" if stopped[row] else "length",
                    prompt_tokens=len(prompt), completion_tokens=len(toks),
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
