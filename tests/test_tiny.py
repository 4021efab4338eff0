"""The offline tiny model: loads with the Auto classes, chats in ChatML, is deterministic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_loads_with_auto_classes(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.vocab_size == len(tok)


def test_chat_template_is_qwen2_chatml(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    with_system = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], tokenize=False)
    assert with_system == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"


@pytest.mark.parametrize("text", ["你好，世界", "Which answer is better? {\"原因\": \"x\", \"更好的回答\": 1}",
                                  "emoji 🙂 and tabs\tand\nnewlines"])
def test_tokenizer_round_trips(tiny_model_dir: Path, text: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok("<|im_end|>", add_special_tokens=False).input_ids == [im_end]


def test_forward_pass_runs(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    from conj_train.model_builders.tiny import build_tiny_model

    a = build_tiny_model(tmp_path / "a", seed=3)
    b = build_tiny_model(tmp_path / "b", seed=3)
    c = build_tiny_model(tmp_path / "c", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_cli_builds_a_loadable_model(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    proc = subprocess.run([sys.executable, "-m", "conj_train", "tiny-model", str(out), "--hidden", "32",
                           "--layers", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    check = ("from transformers import AutoTokenizer, AutoModelForCausalLM;"
             f"t=AutoTokenizer.from_pretrained({str(out)!r});"
             "print(t.apply_chat_template([{'role':'user','content':'你好'}], tokenize=False));"
             f"m=AutoModelForCausalLM.from_pretrained({str(out)!r}); print(m.config.hidden_size)")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "<|im_start|>user\n你好<|im_end|>" in proc.stdout
    assert proc.stdout.strip().endswith("32")


def test_cli_rejects_bad_shape(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "conj_train", "tiny-model", str(tmp_path / "x"),
                           "--hidden", "30", "--heads", "4"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
