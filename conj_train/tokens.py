"""Tokenizers: the one loader every stage and engine uses, and the fast calls of the length rule.

Loading (:func:`load_tokenizer`, :class:`LazyTokenizer`): one place decides what a missing path, a
foreign folder or a tokenizer without a chat template looks like to the user (a one-line ConjError).

Calls of the length rule (docs/method.md#length-rule), whose tokenization dominates stage 2's cost.

A fast tokenizer's Rust backend is called directly: ``encode_batch_fast`` skips the character
offsets ``tokenizer.encode`` computes and nothing here needs (the same ids in about half the time),
and one call per batch of texts keeps the tokenizer's tables warm between texts (a call between
thousands of parses costs about twice as much as one in a batch). Tokenizing only the first 401
tokens was tried and saved nothing: Qwen2's pre-tokenizer regex over the whole text is most of the
cost, and the rule's texts are barely over the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError, loading_errors


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists()


def load_tokenizer(name: str, trust_remote_code: bool = False, *, chat_template: bool = True) -> Any:
    """The tokenizer of model ``name`` (a folder or a Hub id).

    A path that does not exist, a folder without a tokenizer and, with ``chat_template``, a tokenizer
    without a chat template (judge prompts need one) are one-line ConjErrors.
    """
    from transformers import AutoTokenizer

    if not name:
        raise ConjError("no tokenizer given (an empty model name)")
    if _looks_local(name) and not Path(name).expanduser().exists():
        raise ConjError(f"model path not found: {name}")
    from conj_train.inference.loading import check_model_size

    check_model_size(name)  # its config is read here first: a size no model has is refused before
    try:
        tok = AutoTokenizer.from_pretrained(str(Path(name).expanduser()) if _looks_local(name) else name,
                                            trust_remote_code=trust_remote_code)
    except loading_errors() as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConjError(f"cannot load a tokenizer from {name}: {first}") from e
    if chat_template and not getattr(tok, "chat_template", None):
        raise ConjError(f"the tokenizer of {name} has no chat template; judge prompts need one "
                        "(use an instruct/chat model or set tokenizer.chat_template)")
    return tok


class LazyTokenizer:
    """A tokenizer loaded on first use (the filter's length rule: most runs never need it).

    Offers what the length rule calls (``encode``, ``decode``, ``backend_tokenizer``); ``loaded`` says
    whether it was needed."""

    def __init__(self, name: str, trust_remote_code: bool = False, *, purpose: str = "this") -> None:
        self.name = name
        self.trust_remote_code = trust_remote_code
        self.purpose = purpose
        self._tok: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the tokenizer was needed."""
        return self._tok is not None

    def _get(self) -> Any:
        if self._tok is None:
            if not self.name:
                raise ConjError(f"{self.purpose} needs a tokenizer; set 'tokenizer'")
            self._tok = load_tokenizer(self.name, self.trust_remote_code, chat_template=False)
        return self._tok

    @property
    def backend_tokenizer(self) -> Any:
        """The fast tokenizer's Rust backend (None for a slow tokenizer)."""
        return getattr(self._get(), "backend_tokenizer", None)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``."""
        return self._get().encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return self._get().decode(ids)


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
