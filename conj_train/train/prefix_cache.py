"""The cache objects that hand each layer's prompt keys/values from pass 1 to pass 2 of
:mod:`conj_train.train.prefix`, and the gradient-checkpointing checks they need.

The K/V are handed over by two small cache objects instead of transformers' DynamicCache, passed
with ``use_cache=False`` (attention uses any cache it is given; the model then builds none of its
own and does not warn under gradient checkpointing). Pass 1's cache returns its inputs unchanged
and pass 2's only reads, so each decoder-layer call is a pure function of its arguments. That keeps
them valid under non-reentrant gradient checkpointing, whose backward replays a layer with the same
cache object (a DynamicCache would append twice).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F


class PrefixStore:
    """Per-layer prompt keys/values handed from pass 1 to pass 2.

    Pass 1 may run in several row groups (see :func:`conj_train.train.prefix.judgment_hidden_states`);
    each group records into its own sub-store and pass 2 reads them padded to ``keep`` slots, in
    batch row order.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.groups: list[PrefixStore] = []
        self.order: torch.Tensor | None = None

    def prefix(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's prompt K/V for all rows, ``keep`` slots each."""
        if not self.groups:
            return self.keys[layer_idx], self.values[layer_idx]
        keys = rows_in_order([g.keys[layer_idx] for g in self.groups], self.keep, self.order)
        values = rows_in_order([g.values[layer_idx] for g in self.groups], self.keep, self.order)
        return keys, values


def rows_in_order(parts: list[torch.Tensor], width: int, order: torch.Tensor | None) -> torch.Tensor:
    """Concatenate row groups along dim 0, each right-padded with zeros to ``width`` along dim -2."""
    padded = [F.pad(x, (0, 0, 0, width - x.shape[-2])) if x.shape[-2] < width else x for x in parts]
    out = torch.cat(padded)
    return out if order is None else out[order]


class RecordCache:
    """Pass-1 cache: returns K/V unchanged (plain causal attention) and remembers the prompt part."""

    is_compileable = False

    def __init__(self, store: PrefixStore) -> None:
        self.store = store

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the first ``keep`` positions of this layer's K/V; attention uses K/V as is."""
        self.store.keys[layer_idx] = key_states[:, :, : self.store.keep]
        self.store.values[layer_idx] = value_states[:, :, : self.store.keep]
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """No past tokens: pass 1 starts at position 0."""
        return 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Queries start at position 0."""
        return 0

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """Keys are exactly the queries (plain causal mask)."""
        return query_length, 0


class ExtendCache(RecordCache):
    """Pass-2 cache: prepends the stored prompt K/V; never writes, so a replay sees the same state."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys = stored prompt keys followed by this pass's keys."""
        prefix_keys, prefix_values = self.store.prefix(layer_idx)
        return torch.cat([prefix_keys, key_states], dim=-2), torch.cat([prefix_values, value_states], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The stored prompt length."""
        return self.store.keep

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Queries start after the stored prompt slots."""
        return self.store.keep

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """Keys = stored prompt slots + queries."""
        return self.store.keep + query_length, 0


def cache_argument(backbone: Any) -> str | None:
    """The decoder's name for its cache argument: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    params = inspect.signature(backbone.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def with_cache(backbone: Any, cache: Any) -> dict[str, Any]:
    return {cache_argument(backbone) or "cache": cache}


def with_checkpointed_cache(backbone: Any) -> list[Any]:
    """Let checkpointed decoder layers keep our cache (see the module docstring); returns the
    layers touched."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    touched = []
    for module in backbone.modules():
        own_flag = "_can_checkpoint_with_cache" in vars(module)
        if isinstance(module, GradientCheckpointingLayer) and not own_flag:
            module._can_checkpoint_with_cache = True
            touched.append(module)
    return touched


def uses_reentrant_checkpointing(model: Any) -> bool:
    """True when decoder layers run reentrant gradient checkpointing.

    Reentrant checkpointing runs the layer under no_grad and rebuilds the graph from its positional
    inputs only, so gradients from the rejected tokens into the kept prompt K/V would be lost.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            func = getattr(module, "_gradient_checkpointing_func", None)
            keywords = getattr(func, "keywords", {}) or {}
            return bool(keywords.get("use_reentrant", True))
    return False
