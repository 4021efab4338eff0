"""The KV-cached decoder under the ``hf`` engine: one prefill per prompt, its cache fanned out to the
prompt's samples, then one token per live row per step.

Apart from :class:`conj_train.engines.hf.HFEngine` (requests, packing, seeds, texts) because it is
the part that touches transformers' cache internals (``DynamicCache`` layers, a preallocated buffer
layer), which change between transformers versions and are tested on their own.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

# Shortest common prefix (tokens) worth taking from another prompt's cache in a packed prefill.
MIN_SHARED_PREFIX = 16


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
    of a different batch shape. Such a prompt that starts like an earlier one of the same call takes
    the shared prefix's keys and values from it instead of computing them again.

    ``kv_dtype`` (with ``capacity``): the buffer's dtype when it should differ from the model's. A
    half-precision model on CPU decodes with float32 attention
    (:mod:`conj_train.engines.cpu_attention`); a float32 cache casts each position once, when it is
    written, instead of the whole cache in every layer at every step (1.07x tokens/s on SmolLM2,
    bench/kv_dtype.py). It holds the model's half-precision values exactly, so attention sees the same
    inputs and the texts are the same; the cache takes twice the memory.
    """

    def __init__(
        self, model: Any, prompts: Sequence[Sequence[int]], rows: Sequence[int], capacity: int = 0,
        kv_dtype: Any = None,
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
            self._cache.layers = [_buffer_layer_class()(capacity, kv_dtype) if type(layer) is DynamicLayer else layer
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
            logits = self._prefill_each(prompts, fan_out, capacity, kv_dtype)
        self.logits = torch.repeat_interleave(logits, fan_out, dim=0)

    def _prefill_each(self, prompts: Sequence[Sequence[int]], fan_out: Any, capacity: int, kv_dtype: Any) -> Any:
        """Prefill prompt by prompt into one left-aligned buffer; returns the prompts' last logits.

        A prompt that starts with at least :data:`MIN_SHARED_PREFIX` tokens of an earlier prompt of the
        unit (judge prompts share their template and often the question and one answer) takes those
        positions' keys and values from that prompt's cache and runs only the rest: the same causal
        computation, up to the rounding of a different call shape.
        """
        import torch
        from transformers import DynamicCache

        device = self._model.device
        longest = max(len(p) for p in prompts)
        caches, logits = [], []
        for index, prompt in enumerate(prompts):
            cache = DynamicCache(config=self._model.config)
            source, shared = _longest_shared_prefix(prompts[:index], prompt)
            if shared >= MIN_SHARED_PREFIX:
                for layer_index, layer in enumerate(caches[source].layers):
                    cache.update(layer.keys[:, :, :shared], layer.values[:, :, :shared], layer_index)
            else:
                shared = 0
            ids = torch.tensor([list(prompt[shared:])], dtype=torch.long, device=device)
            out = self._model(input_ids=ids, use_cache=True, **self._last_only, **{self._cache_kw: cache})
            caches.append(cache)
            logits.append(out.logits[:, -1].float())
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        row_len = torch.repeat_interleave(lengths, fan_out)
        for i, layer in enumerate(self._cache.layers):
            k0, v0 = caches[0].layers[i].keys, caches[0].layers[i].values
            keys = k0.new_zeros((len(row_len), k0.shape[1], capacity, k0.shape[-1]), dtype=kv_dtype or k0.dtype)
            values = v0.new_zeros((len(row_len), v0.shape[1], capacity, v0.shape[-1]), dtype=kv_dtype or v0.dtype)
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


def _longest_shared_prefix(earlier: Sequence[Sequence[int]], prompt: Sequence[int]) -> tuple[int, int]:
    """``(index, length)`` of the earlier prompt sharing the longest prefix with ``prompt``, the length
    capped so that at least one token of ``prompt`` is left to run (its logits); ``(0, 0)`` if none."""
    best, best_len = 0, 0
    for index, other in enumerate(earlier):
        n = 0
        for a, b in zip(other, prompt[: len(prompt) - 1], strict=False):
            if a != b:
                break
            n += 1
        if n > best_len:
            best, best_len = index, n
    return best, best_len


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

        def __init__(self, capacity: int, dtype: Any = None) -> None:
            super().__init__()
            self.capacity = capacity
            self.buffer_dtype = dtype  # not `dtype`: DynamicLayer sets that to the incoming keys'
            self.filled = 0

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            new = key_states.shape[-2]
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                shape = (*key_states.shape[:2], max(self.capacity, new), key_states.shape[-1])
                self._k = key_states.new_empty(shape, dtype=self.buffer_dtype or key_states.dtype)
                self._v = value_states.new_empty((*shape[:3], value_states.shape[-1]),
                                                 dtype=self.buffer_dtype or value_states.dtype)
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
