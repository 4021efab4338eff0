"""Random-weight Qwen2 models of fixed shapes for the benchmarks (no weights downloaded).

``h256`` is the CPU benchmarks' default, ``qwen2-1.5b`` has Qwen2-1.5B's shapes (the GPU check's real
shape), ``tiny`` is for smoke tests of the real-shape code paths on CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Qwen2Config fields per shape (max_position_embeddings etc. included: the shape is the whole config).
SHAPES: dict[str, dict[str, Any]] = {
    "h256": {"vocab_size": 2048, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
             "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096},
    "qwen2-1.5b": {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                   "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32768,
                   "rope_theta": 1e6},
    "tiny": {"vocab_size": 2048, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 8192},
}


def random_qwen2(shapes: dict[str, Any], *, seed: int = 0, attn: str = "sdpa", dtype: Any = None,
                 device: str = "cpu", **config: Any) -> Any:
    """A Qwen2 causal LM of ``shapes`` with fixed random weights (``seed``) and tied embeddings, built in
    place on ``device`` (no CPU copy of a GPU model); ``config``: further ``Qwen2Config`` fields."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    cfg = Qwen2Config(**shapes, tie_word_embeddings=True, attn_implementation=attn, **config)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype or torch.float32, attn_implementation=attn)


def save_random_model(out_dir: Path, shape: str, *, dtype: Any, device: str, seed: int = 0) -> Path:
    """Save a random model of ``SHAPES[shape]`` with the tiny offline tokenizer (``conj_train.model_builders.tiny``;
    its ids are below every shape's vocabulary) to ``out_dir``, for code that loads from a folder.

    The model is built on ``device`` in ``dtype`` (a 1.5B model never exists in fp32 on the host).
    """
    from transformers import AutoTokenizer, GenerationConfig

    from conj_train.model_builders.tiny import build_tiny_model

    tok_dir = build_tiny_model(out_dir.parent / f"{out_dir.name}-tokenizer", seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    ids = {"bos_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    model = random_qwen2(SHAPES[shape], seed=seed, dtype=dtype, device=device, **ids)
    model.generation_config = GenerationConfig(**ids, do_sample=False)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@contextlib.contextmanager
def stock_attention(model: Any) -> Iterator[None]:
    """Run ``model`` on transformers' own SDPA inside the block, then give back its attention.

    A ``generate`` baseline is what a user gets: stock SDPA, not the hf engine's decode-step kernel
    choice (conj_train/engines/cpu_attention.py), which the engine sets on the same model object.
    """
    chosen = model.config._attn_implementation
    model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        model.set_attn_implementation(chosen)
