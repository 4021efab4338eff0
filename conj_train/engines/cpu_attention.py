"""Decode-step attention for bf16/fp16 models on CPU: SDPA in float32 for short queries.

torch's CPU flash-attention kernel is several times slower in bf16 than in float32 when the query
is a single token (measured, torch 2.13, one thread, 9 heads x 64, 650 keys: 0.58 ms bf16 vs
0.09 ms with the inputs upcast), and a decode step is exactly that call, once per layer: on
SmolLM2-135M it took two thirds of the sampling time. From about 8 query tokens on, bf16 is as
fast, so prefill and training keep the model dtype. The hf engine keeps such a model's KV cache in
float32 (:class:`~conj_train.engines.kv_decoder.KVDecoder`): the decode step's ``.float()`` is then
free, and a prefill casts the cached keys and values back to the model dtype, exactly. Registered with transformers'
``AttentionInterface``, so the model code is unchanged; the HF engine selects it for CPU
half-precision models unless the user names an attention implementation.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "sdpa_cpu_decode"
# Queries up to this many tokens run in float32 (the decode step, and a few-token prefill tail).
MAX_UPCAST_QUERY = 4


def sdpa_cpu_decode(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with short half-precision CPU queries computed in float32."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    half = query.dtype in (torch.bfloat16, torch.float16)
    if not (half and query.device.type == "cpu" and query.shape[-2] <= MAX_UPCAST_QUERY):
        # Keys and values from a float32 cache hold half-precision values: the cast back is exact.
        key, value = key.to(query.dtype), value.to(query.dtype)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask.float()
    out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                          **kwargs)
    return out.to(query.dtype), weights


def register() -> str:
    """Register the attention function with transformers (idempotent); returns its name.

    Its masks are SDPA's: transformers builds no mask at all for an attention name its mask interface
    does not know (it takes it for a server backend), which dropped the holes of a packed cache and
    the causal offset of a prefill on top of a cache."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, sdpa_cpu_decode)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_for(model: Any) -> bool:
    """Switch ``model`` to this attention if it runs SDPA in half precision on CPU; True if switched."""
    dtype = next(model.parameters()).dtype
    on_cpu = next(model.parameters()).device.type == "cpu"
    if not (on_cpu and dtype in (torch.bfloat16, torch.float16) and model.config._attn_implementation == "sdpa"):
        return False
    model.set_attn_implementation(register())
    return True
