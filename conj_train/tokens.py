"""Tokenizer calls of the length rule (conj-spec 6.3), whose tokenization dominates stage 2's cost.

A fast tokenizer's Rust backend is called directly: ``encode_batch_fast`` skips the character
offsets ``tokenizer.encode`` computes and nothing here needs (the same ids in about half the time),
and one call per batch of texts keeps the tokenizer's tables warm between texts (a call between
thousands of parses costs about twice as much as one in a batch). Tokenizing only the first 401
tokens was tried and saved nothing: Qwen2's pre-tokenizer regex over the whole text is most of the
cost, and the rule's texts are barely over the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def encode_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, as ``tokenizer.encode`` gives them."""
    return encode_many(tokenizer, [text])[0]


def encode_many(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """``encode_ids`` of each text, in one backend call for a fast tokenizer."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "encode_batch_fast"):
        return [e.ids for e in backend.encode_batch_fast(list(texts), add_special_tokens=False)]
    return [tokenizer.encode(text, add_special_tokens=False) for text in texts]


def decode_ids(tokenizer: Any, ids: list[int]) -> str:
    """``tokenizer.decode(ids)``, through the fast backend when there is one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.decode(ids, skip_special_tokens=False)
    return tokenizer.decode(ids)
