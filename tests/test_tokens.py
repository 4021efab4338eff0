"""The one tokenizer loader (and its lazy form for the length rule) on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from conj_train.errors import ConjError
from conj_train.tokens import LazyTokenizer, encode_ids, load_tokenizer


def test_load_tokenizer_errors_are_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConjError, match="model path not found: /nonexistent/judge"):
        load_tokenizer("/nonexistent/judge")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConjError, match="cannot load a tokenizer from") as err:
        load_tokenizer(str(tmp_path / "empty"))
    assert "\n" not in str(err.value)
    assert load_tokenizer(str(tiny_model_dir)).chat_template


def test_chat_template_is_required_unless_told_otherwise(tmp_path: Path, tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "plain")
    with pytest.raises(ConjError, match="has no chat template; judge prompts need one"):
        load_tokenizer(str(tmp_path / "plain"))
    assert load_tokenizer(str(tmp_path / "plain"), chat_template=False) is not None


def test_lazy_tokenizer_loads_on_first_use(tiny_model_dir: Path) -> None:
    lazy = LazyTokenizer(str(tiny_model_dir))
    assert not lazy.loaded
    assert encode_ids(lazy, "hello world") == load_tokenizer(str(tiny_model_dir)).encode(
        "hello world", add_special_tokens=False)
    assert lazy.loaded and lazy.decode(lazy.encode("hello")) == "hello"
    with pytest.raises(ConjError, match="filter: the length rule needs a tokenizer"):
        LazyTokenizer("", purpose="filter: the length rule").encode("x")
