"""The embedded demo: a toy preference set and a tiny model, so the pipeline runs anywhere offline.

The toy task ("fruit") is one a tiny model can learn on a CPU: the question is "Name a fruit.", the
chosen answer ends in a fruit and the rejected one in something else (an animal, colour, tool...). It
exists to show the stages working end to end, not to produce a useful judge.

:func:`demo_splits` (the data of ``conj demo``) draws its final words from lists the tiny model's
tokenizer (:mod:`conj_train.model_builders.tiny`) holds as single tokens, so that the rule is one a 2-layer model
reads off one token per answer; names it splits into characters ("cherry" -> c|her|r|y) were learned
later and less reliably (docs/demo.md).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

_FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
           "kiwi", "lime", "melon", "papaya", "apricot", "fig", "guava", "lychee", "date", "berry"]
_OTHERS = ["horse", "tiger", "rabbit", "mouse", "eagle", "purple", "green", "yellow", "black", "white",
           "hammer", "shovel", "wrench", "spoon", "ladder", "table", "pencil", "bucket", "rope", "brick"]
# One token each (with the leading space) in the tiny model's tokenizer; tests check it.
_SPLIT_FRUITS = ["apple", "banana", "orange", "pear"]
_SPLIT_OTHERS = ["dog", "fox", "brown", "sea", "poem", "code", "weather", "breeze", "world",
                 "error", "plants"]
_FILLER = ["well", "I think", "sure", "my answer is", "let me say", "probably", "hmm", "ok", "of course",
           "easy", "I would say", "that is", "here it is", "right"]


def _lead(rng: random.Random) -> str:
    return " ".join(rng.sample(_FILLER, k=rng.randint(1, 3))).capitalize()


def _toy_row(rng: random.Random, fruits: list[str] = _FRUITS, others: list[str] = _OTHERS,
             varied: bool = False) -> dict:
    lead = _lead(rng)
    return {
        "prompt": "Name a fruit.",
        "chosen": f"{lead}: {rng.choice(fruits)}.",
        "rejected": f"{_lead(rng) if varied else lead}: {rng.choice(others)}.",
    }


def demo_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """``n`` toy preference rows in TRL's standard format (prompt / chosen / rejected strings)."""
    rng = random.Random(seed)
    return [_toy_row(rng) for _ in range(n)]


def demo_splits(n_train: int, n_test: int, seed: int = 0, varied: bool = False
                ) -> tuple[list[dict], list[dict]]:
    """Disjoint train and held-out toy rows: no (chosen, rejected) pair occurs twice in either or both.

    Repeats are skipped, so the ingest step drops no row as a duplicate and a held-out pair is never
    one the judge was trained on; the words themselves are shared (the rule is what is learned). The
    final words are single tokens of the tiny tokenizer (see the module docstring). ``varied`` draws
    the two answers' lead phrases independently, so their lengths differ (up to ~5x either way): the
    data of the length-bias ablation.
    """
    capacity = len(_SPLIT_FRUITS) * len(_SPLIT_OTHERS) * 2380  # 2380 filler leads of 1-3 phrases
    if n_train < 0 or n_test < 0 or n_train + n_test > capacity // 2:
        from conj_train.errors import ConjError

        raise ConjError(f"demo: train_pairs and test_pairs must be >= 0 with a sum <= {capacity // 2}")
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    rows: list[dict] = []
    while len(rows) < n_train + n_test:
        row = _toy_row(rng, _SPLIT_FRUITS, _SPLIT_OTHERS, varied)
        key = (row["chosen"], row["rejected"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows[:n_train], rows[n_train:]


def write_demo_splits(folder: str | Path, n_train: int, n_test: int, seed: int = 0) -> tuple[Path, Path]:
    """Write :func:`demo_splits` as ``train.jsonl`` and ``test.jsonl`` in ``folder``, and the varied
    ones (length-bias ablation, 4x as many rows) as ``train-varied.jsonl`` / ``test-varied.jsonl``;
    returns the first two paths."""
    from conj_train.io import write_jsonl

    folder = Path(folder)
    # The varied sets are larger: only ~1 pair in 9 has one answer over twice as long as the other.
    for suffix, varied, scale in (("", False, 1), ("-varied", True, 4)):
        train, test = demo_splits(scale * n_train, scale * n_test, seed, varied)
        write_jsonl(folder / f"train{suffix}.jsonl", train)
        write_jsonl(folder / f"test{suffix}.jsonl", test)
    return folder / "train.jsonl", folder / "test.jsonl"


def write_demo_data(path: str | Path, n: int = 64, seed: int = 0) -> Path:
    """Write the toy preference set as JSONL and return its path."""
    from conj_train.io import write_jsonl

    path = Path(path)
    write_jsonl(path, demo_rows(n, seed))
    return path


def build_demo_policy(path: str | Path, base_model: str | Path, rows: list[dict], *, epochs: float = 2.0,
                      learning_rate: float = 3e-3, seed: int = 0) -> Path:
    """A tiny policy for the reward demo (docs/reward.md): ``base_model`` after a short SFT (TRL's
    ``SFTTrainer``, standard prompt/completion rows, loss on the completion) on the toy rows' answers,
    their chosen and their rejected answer alike, so that about half of its answers end in a fruit and a
    judge's reward has something to move. A folder that already holds a model is returned as it is."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from conj_train.tokens import load_tokenizer

    out = Path(path)
    if (out / "config.json").exists():
        return out
    data = [{"prompt": r["prompt"], "completion": r[k]} for r in rows for k in ("chosen", "rejected")]
    tokenizer = load_tokenizer(str(base_model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    args = SFTConfig(
        output_dir=str(out), learning_rate=learning_rate, num_train_epochs=epochs,
        per_device_train_batch_size=16, lr_scheduler_type="cosine", max_length=64, seed=seed,
        completion_only_loss=True, gradient_checkpointing=False, save_strategy="no", report_to="none",
        logging_steps=10, disable_tqdm=True, use_cpu=True, bf16=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data),
                         processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def run_demo(output: str | Path | None = None, *, config: str | Path | None = None,
             seed: int | None = None, overrides: dict[str, Any] | None = None) -> str:
    """Build the tiny model and toy data, run the demo pipeline, check that Con-J learned.

    ``config``: the demo's pipeline recipe; by default the shipped ``recipes/demo/pipeline.yaml``
    (found in a wheel as in a clone).

    The recipe's ``demo:`` section sizes the toy data (``train_pairs``, ``test_pairs``) and sets
    ``min_gain``: the demo fails (ConjError) when the Con-J judge is not at least that far above the
    base judge in accuracy averaged over both orders on the held-out pairs. Returns the table.
    """
    from conj_train.config.values import read_yaml
    from conj_train.errors import ConjError
    from conj_train.io import read_json
    from conj_train.model_builders.tiny import build_tiny_model
    from conj_train.pipeline.recipes import shipped_dir
    from conj_train.pipeline.run import run_pipeline

    config = config or shipped_dir("recipes") / "demo" / "pipeline.yaml"
    spec = read_yaml(config)
    demo = spec.get("demo") or {}
    seed = int(spec.get("seed", 0) if seed is None else seed)
    out = Path(output or spec.get("output_dir", "runs/demo"))
    model = out / "tiny-model"
    if not (model / "config.json").exists():
        build_tiny_model(model, seed=seed)
    train, test = write_demo_splits(out / "data", int(demo.get("train_pairs", 1000)),
                                    int(demo.get("test_pairs", 200)), seed=seed)
    paths = {"output_dir": str(out), "model_name_or_path": str(model), "dataset_name": str(train),
             "heldout": str(test)}
    result = run_pipeline(config, overrides={**(overrides or {}), **paths})
    metrics = read_json(result.eval_dirs[-1] / "metrics.json")
    rows = {r["model"]: r for r in metrics["comparison"]}
    table = demo_table(rows)
    gain = (rows["conj"]["accuracy_avg"] or 0) - (rows["base"]["accuracy_avg"] or 0)
    text = f"{result.summary}\n\n{table}\nCon-J gain over the base judge: {100 * gain:+.1f} points"
    min_gain = float(demo.get("min_gain", 0.25))
    if gain < min_gain:
        raise ConjError(f"demo failed: Con-J is {100 * gain:+.1f} points over the base judge, below the "
                        f"required {100 * min_gain:+.0f} (see {result.eval_dirs[-1] / 'summary.md'})")
    return text


def demo_table(rows: dict[str, dict]) -> str:
    """The demo's held-out table (both orders): base judge, scalar RM, Con-J judge."""
    lines = ["| model | accuracy (avg of orders) | strict | consistency | parse failures |",
             "|---|---|---|---|---|"]
    for name in ("base", "rm", "conj"):
        if name in rows:
            r = rows[name]
            cells = [f"{100 * (r.get(k) or 0):.1f}%" for k in
                     ("accuracy_avg", "accuracy_strict", "consistency", "parse_failure_rate")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
