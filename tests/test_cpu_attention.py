"""Decode-step attention for half-precision CPU models (conj_train/engines/cpu_attention.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from conj_train.engines.cpu_attention import NAME, sdpa_cpu_decode

QUESTION = [{"role": "user", "content": "Question: name a fruit. Answer 1: apple. Answer 2: hammer."}]


def _qkv(query_len: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, query_len, 16, generator=gen).bfloat16()
    k = torch.randn(2, 2, 40, 16, generator=gen).bfloat16()
    return q, k, torch.randn(2, 2, 40, 16, generator=gen).bfloat16()


class _Layer(torch.nn.Module):
    num_key_value_groups = 2
    is_causal = True


def test_single_token_query_is_computed_in_float32() -> None:
    q, k, v = _qkv(1)
    out, _ = sdpa_cpu_decode(_Layer(), q, k, v, None)
    want, _ = sdpa_attention_forward(_Layer(), q.float(), k.float(), v.float(), None)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, want.to(torch.bfloat16))


def test_long_query_keeps_the_model_dtype_kernel() -> None:
    q, k, v = _qkv(16)
    out, _ = sdpa_cpu_decode(_Layer(), q, k, v, None)
    want, _ = sdpa_attention_forward(_Layer(), q, k, v, None)
    assert torch.equal(out, want)


def test_bf16_engine_uses_it_and_decodes_close_to_float32(tiny_model_dir: Path) -> None:
    from conj_train.engines.hf import HFEngine
    from conj_train.engines.kv_decoder import KVDecoder

    bf16 = HFEngine(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    fp32 = HFEngine(str(tiny_model_dir), dtype="float32", device="cpu")
    assert bf16.model.config._attn_implementation == NAME
    assert fp32.model.config._attn_implementation == "sdpa"
    prompt = bf16.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)["input_ids"]
    with torch.inference_mode():
        decoders = [KVDecoder(e.model, [prompt], [2], capacity=len(prompt) + 8) for e in (bf16, fp32)]
        tokens = torch.tensor([5, 9])
        for _ in range(3):
            low, high = (d.step(tokens) for d in decoders)
            # bf16 weights (8-bit mantissa) against float32: the tiny model's logits are O(1).
            torch.testing.assert_close(low, high, atol=0.1, rtol=0)
    explicit = HFEngine(str(tiny_model_dir), dtype="bfloat16", device="cpu", attn_implementation="eager")
    assert explicit.model.config._attn_implementation == "eager"


def test_a_float32_kv_buffer_gives_bitwise_the_logits_of_the_model_dtype_buffer(tiny_model_dir: Path) -> None:
    from conj_train.engines.base import GenerationRequest, SamplingParams
    from conj_train.engines.hf import HFEngine
    from conj_train.engines.kv_decoder import KVDecoder

    engine = HFEngine(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert engine._kv_dtype == torch.float32  # the engine's choice for bf16 decode attention on CPU
    first = engine.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)["input_ids"]
    second = first[:-3]
    with torch.inference_mode():
        # One prompt fanned out to 2 rows, and two prompts of different lengths packed with holes.
        for prompts, rows in (([first], [2]), ([first, second], [2, 1])):
            half, full = (KVDecoder(engine.model, prompts, rows, capacity=len(first) + 8, kv_dtype=d)
                          for d in (None, torch.float32))
            assert full._cache.layers[0].keys.dtype == torch.float32
            assert half._cache.layers[0].keys.dtype == torch.bfloat16
            assert torch.equal(half.logits, full.logits)
            tokens = torch.tensor([5, 9, 11][: sum(rows)])
            for _ in range(4):
                assert torch.equal(half.step(tokens), full.step(tokens))
    # The engine's sampled texts through its float32 cache equal those through a bf16 cache.
    request = [GenerationRequest(key="q", prompt=engine.tokenizer.decode(first), seeds=[0, 1])]
    params = SamplingParams(max_new_tokens=12)
    with_fp32 = [g.text for g in engine.generate(request, params)]
    engine._kv_dtype = None
    assert [g.text for g in engine.generate(request, params)] == with_fp32
