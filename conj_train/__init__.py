"""conj-train: train generative LLM judges from preference data with the Con-J method.

The embeddable APIs are importable from here (``from conj_train import Judge``); they load lazily,
so ``import conj_train`` (and ``conj --help``) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first access).
_LAZY = {
    "Judge": "conj_train.inference.judge",
    "JudgeReward": "conj_train.inference.judge_reward",
    "RewardModel": "conj_train.inference.reward_model",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a lazily exported name (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'conj_train' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
