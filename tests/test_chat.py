"""Chat turns and chat-template rendering of judge prompts, and their token lengths."""

from __future__ import annotations

from pathlib import Path

import pytest

from conj_train.errors import ConjError
from conj_train.prompts.build import build_judge_prompts
from conj_train.prompts.chat import chat_messages, prompt_token_lengths, render_chat


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_render_chat_uses_the_tokenizers_template(tokenizer) -> None:
    default = render_chat(tokenizer, "Which is better?")
    assert default.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "<|im_start|>user\nWhich is better?<|im_end|>\n" in default
    assert default.endswith("<|im_start|>assistant\n")

    custom = render_chat(tokenizer, "Which is better?", system="Be strict.", prefill=' {"原因":')
    assert custom.startswith("<|im_start|>system\nBe strict.<|im_end|>\n")
    assert "You are a helpful assistant." not in custom
    assert custom.endswith('<|im_start|>assistant\n {"原因":')

    empty = render_chat(tokenizer, "Q", system="")
    assert empty == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


def test_chat_messages_are_what_render_chat_renders(tokenizer) -> None:
    assert chat_messages("Q") == [{"role": "user", "content": "Q"}]
    assert chat_messages("Q", system="") == [{"role": "system", "content": ""}, {"role": "user", "content": "Q"}]
    for system in (None, "", "Be strict."):
        expected = tokenizer.apply_chat_template(chat_messages("Q", system=system), tokenize=False,
                                                 add_generation_prompt=True)
        assert render_chat(tokenizer, "Q", system=system) == expected


def test_prompt_token_lengths_match_plain_tokenization(tokenizer) -> None:
    records = [{"id": f"L{i}", "question": "问" * (i * 7), "chosen": "good", "rejected": "bad"} for i in range(5)]
    items = build_judge_prompts(records)
    texts = [render_chat(tokenizer, it["prompt"]) for it in items]
    lengths = prompt_token_lengths(tokenizer, texts, batch_size=2)
    assert lengths == [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert prompt_token_lengths(tokenizer, []) == []


def test_render_chat_without_chat_template_is_a_user_error(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.raises(ConjError, match="has no chat template"):
        render_chat(tok, "hello")
