"""The embedded demo: a toy preference set and a tiny model, so the pipeline runs anywhere offline.

The toy task ("fruit") is one a tiny model can learn on a CPU: the question is "Name a fruit.", the
chosen answer ends in a fruit and the rejected one in an animal, colour or tool. It exists to show
the stages working end to end, not to produce a useful judge.
"""

from __future__ import annotations

import random
from pathlib import Path

_FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
           "kiwi", "lime", "melon", "papaya", "apricot", "fig", "guava", "lychee", "date", "berry"]
_OTHERS = ["horse", "tiger", "rabbit", "mouse", "eagle", "purple", "green", "yellow", "black", "white",
           "hammer", "shovel", "wrench", "spoon", "ladder", "table", "pencil", "bucket", "rope", "brick"]
_FILLER = ["well", "I think", "sure", "my answer is", "let me say", "probably", "hmm", "ok", "of course",
           "easy", "I would say", "that is", "here it is", "right"]


def _toy_row(rng: random.Random) -> dict:
    words = rng.sample(_FILLER, k=rng.randint(1, 3))
    lead = " ".join(words).capitalize()
    return {
        "prompt": "Name a fruit.",
        "chosen": f"{lead}: {rng.choice(_FRUITS)}.",
        "rejected": f"{lead}: {rng.choice(_OTHERS)}.",
    }


def demo_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """``n`` toy preference rows in TRL's standard format (prompt / chosen / rejected strings)."""
    rng = random.Random(seed)
    return [_toy_row(rng) for _ in range(n)]


def demo_splits(n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Disjoint train and held-out toy rows: no (chosen, rejected) pair occurs twice in either or both.

    Repeats are skipped, so the ingest step drops no row as a duplicate and a held-out pair is never
    one the judge was trained on; the words themselves are shared (the rule is what is learned).
    """
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_test:
        row = _toy_row(rng)
        key = (row["chosen"], row["rejected"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows[:n_train], rows[n_train:]


def write_demo_splits(folder: str | Path, n_train: int, n_test: int, seed: int = 0) -> tuple[Path, Path]:
    """Write :func:`demo_splits` as ``train.jsonl`` and ``test.jsonl`` in ``folder``; their paths."""
    from conj_train.io import write_jsonl

    folder = Path(folder)
    train, test = demo_splits(n_train, n_test, seed)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", test)
    return folder / "train.jsonl", folder / "test.jsonl"


def write_demo_data(path: str | Path, n: int = 64, seed: int = 0) -> Path:
    """Write the toy preference set as JSONL and return its path."""
    from conj_train.io import write_jsonl

    path = Path(path)
    write_jsonl(path, demo_rows(n, seed))
    return path


def run_demo(output: str | Path, *, pairs: int = 48, seed: int = 0) -> str:
    """Run every stage that exists on the embedded demo; returns a short text summary."""
    import torch

    from conj_train.data import load_preferences
    from conj_train.filter import FilterConfig, run_filter
    from conj_train.sample import SampleConfig, run_sample
    from conj_train.tiny import build_tiny_model

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = Path(output)
    model = out / "tiny-model"
    if not (model / "config.json").exists():
        build_tiny_model(model, seed=seed)
    data = write_demo_data(out / "data" / "fruit.jsonl", n=pairs, seed=seed)
    report = load_preferences(str(data)).report
    lines = [f"data: {report.rows_used} of {report.rows_read} toy pairs used ({dict(report.skipped)} skipped)"]
    sample = run_sample(SampleConfig(model=str(model), dataset=str(data), output_dir=str(out / "sample"),
                                     n=4, hint_samples=1, max_new_tokens=48, batch_pairs=8))
    lines.append("sample: " + sample.summary.replace("\n", "\n        "))
    filtered = run_filter(FilterConfig(sample_dir=str(out / "sample"), output_dir=str(out / "filter")))
    lines.append("filter: " + filtered.summary.replace("\n", "\n        "))
    return "\n".join(lines)
