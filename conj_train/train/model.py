"""The base model and its tokenizer for training: loading checks that fail in one line, before any
data is prepared, and the ``from_pretrained`` options (dtype, attention, QLoRA, cache) of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import ModelConfig

from conj_train.errors import ConjError, loading_errors
from conj_train.inference.loading import check_model_size


def check_model_source(name: str, trust_remote_code: bool, revision: str | None = None) -> None:
    """Refuse, before any data is prepared, a model that cannot load: a missing or empty folder, one
    without ``config.json``, or a config that needs remote code without ``trust_remote_code``."""
    from transformers import AutoConfig

    p = Path(name).expanduser()
    if p.exists() or name.startswith((".", "/", "~")):
        if not p.is_dir():
            raise ConjError(f"model folder not found: {name}")
        if not (p / "config.json").is_file():
            raise ConjError(f"{name}: no config.json (not a saved model folder)")
        check_model_size(p)
    try:
        AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except loading_errors() as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in str(e):
            first = "its config needs remote code; pass --trust_remote_code true if you trust it"
        raise ConjError(f"cannot load model {name}: {first}") from e


def load_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(name, **kwargs)``; broken weights (truncated, missing) are a ConjError."""
    try:
        model = cls.from_pretrained(name, **kwargs)
    except loading_errors() as e:
        raise ConjError(f"cannot load model {name}: {str(e).strip().splitlines()[0]}") from e
    _drop_unused_temperature(model)
    return model


def _drop_unused_temperature(model: Any) -> None:
    """A judge folder's generation config is greedy with ``temperature: 0`` (for vLLM, which reads the
    temperature: ``lifecycle.set_eval_decoding``). Greedy decoding never uses the temperature, and
    transformers before 5.24 refuses to *save* that pair, so a run that trains from a judge (a second
    Con-J round) drops it before the trainer saves the model."""
    config = getattr(model, "generation_config", None)
    if config is not None and not getattr(config, "do_sample", False) and getattr(config, "temperature", None) == 0:
        config.temperature = None


def load_tokenizer(model_args: ModelConfig, trust_remote_code: bool = False) -> Any:
    """The base model's tokenizer (with its chat template); pad falls back to eos."""
    from transformers import AutoTokenizer

    if not model_args.model_name_or_path:
        raise ConjError("model_name_or_path is required")
    check_model_source(model_args.model_name_or_path, trust_remote_code, revision=model_args.model_revision)
    try:
        tok = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                            trust_remote_code=trust_remote_code)
    except loading_errors() as e:
        raise ConjError(f"cannot load the tokenizer of {model_args.model_name_or_path}: "
                        f"{str(e).strip().splitlines()[0]}") from e
    if tok.chat_template is None:
        raise ConjError(f"{model_args.model_name_or_path}: the tokenizer has no chat template; the judge "
                        "prompts are conversations")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def model_kwargs(model_args: ModelConfig, training_args: Any) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments: dtype, attention, quantization (QLoRA), cache."""
    import torch
    from trl import get_quantization_config

    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    if not torch.cuda.is_available():
        dtype = torch.float32  # half-precision weights on CPU train slowly and, under DeepSpeed, not at all
    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
        "use_cache": not training_args.gradient_checkpointing,
    }
    quant = get_quantization_config(model_args)
    if quant is not None:
        if not torch.cuda.is_available():
            raise ConjError("load_in_4bit / load_in_8bit (QLoRA) need a CUDA GPU and bitsandbytes")
        from accelerate import PartialState

        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs

