"""Loading a model for inference: the one loader of the scorers (reward models, verdict readers).

A sequence-classification reward model (:class:`conj_train.reward_model.RewardModel`) and a causal LM
read only for verdict probabilities (:class:`conj_train.probability.VerdictScorer`) load the same
way: on a device (CUDA when there is one), in a named dtype, in eval mode, and a folder that is not
such a model is a one-line ConjError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conj_train.errors import ConjError


def load_model(auto_class: Any, path: str | Path, *, what: str, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False) -> Any:
    """``auto_class.from_pretrained(path)`` on ``device`` in ``dtype``, in eval mode.

    ``auto_class`` is a transformers auto class (``AutoModelForCausalLM``...); ``what`` names the
    model in the error (``cannot load <what> from <path>: ...``). ``dtype`` is ``"auto"`` or a torch
    dtype name (``"float32"``, ``"bfloat16"``); ``device`` defaults to ``cuda`` when available.
    """
    import torch

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
