"""Loading a model for inference: the one loader of the scorers (reward models, verdict readers).

A sequence-classification reward model (:class:`conj_train.inference.reward_model.RewardModel`) and a causal LM
read only for verdict probabilities (:class:`conj_train.inference.probability.VerdictScorer`) load the same
way: on a device (CUDA when there is one), in a named dtype, in eval mode, and a folder that is not
such a model is a one-line ConjError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conj_train.errors import ConjError

# What a model's config.json may ask for before anything is allocated: far above any released model
# (the largest have about 130 layers and hidden size 16-25k), far below what would take minutes to
# build (``num_hidden_layers: 1e7``).
MODEL_LIMITS = {"num_hidden_layers": 1_000, "hidden_size": 131_072, "intermediate_size": 1_048_576,
                "vocab_size": 4_194_304, "num_attention_heads": 4_096}


def check_model_size(path: str | Path) -> None:
    """Refuse (one line) a local model folder whose ``config.json`` asks for sizes past
    :data:`MODEL_LIMITS`, before any weights are allocated. A Hub id or a folder without a readable
    config is left to the loader."""
    import json

    config_path = Path(path).expanduser() / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    parts = [config, *(v for v in config.values() if isinstance(v, dict))]  # text_config, ...
    for part in parts:
        for key, limit in MODEL_LIMITS.items():
            value = part.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and not 0 < value <= limit:
                raise ConjError(f"{path}: config.json asks for {key}={value!r} (1 to {limit:,}); not a model to load")


def load_model(auto_class: Any, path: str | Path, *, what: str, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False) -> Any:
    """``auto_class.from_pretrained(path)`` on ``device`` in ``dtype``, in eval mode.

    ``auto_class`` is a transformers auto class (``AutoModelForCausalLM``...); ``what`` names the
    model in the error (``cannot load <what> from <path>: ...``). ``dtype`` is ``"auto"`` or a torch
    dtype name (``"float32"``, ``"bfloat16"``); ``device`` defaults to ``cuda`` when available.
    """
    import torch

    check_model_size(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = auto_class.from_pretrained(
            str(path),
            trust_remote_code=trust_remote_code,
            device_map=device,
            dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        )
    except (OSError, ValueError) as e:
        raise ConjError(f"cannot load {what} from {path}: {str(e).splitlines()[0]}") from e
    return model.eval()
