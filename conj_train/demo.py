"""The embedded demo: a toy preference set and a tiny model, so the pipeline runs anywhere offline.

The toy task ("fruit") is one a tiny model can learn on a CPU: the question is "Name a fruit.", the
chosen answer ends in a fruit and the rejected one in an animal, colour or tool. It exists to show
the stages working end to end, not to produce a useful judge.
"""

from __future__ import annotations

import random
from pathlib import Path

_FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum"]
_OTHERS = ["horse", "tiger", "rabbit", "purple", "green", "yellow", "hammer", "shovel", "wrench", "spoon"]
_FILLER = ["well", "I think", "sure", "my answer is", "let me say", "probably", "hmm", "ok"]


def demo_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """``n`` toy preference rows in TRL's standard format (prompt / chosen / rejected strings)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(_FILLER, k=rng.randint(1, 3))
        lead = " ".join(words).capitalize()
        rows.append({
            "prompt": "Name a fruit.",
            "chosen": f"{lead}: {rng.choice(_FRUITS)}.",
            "rejected": f"{lead}: {rng.choice(_OTHERS)}.",
        })
    return rows


def write_demo_data(path: str | Path, n: int = 64, seed: int = 0) -> Path:
    """Write the toy preference set as JSONL and return its path."""
    from conj_train.io import write_jsonl

    path = Path(path)
    write_jsonl(path, demo_rows(n, seed))
    return path
