"""The scalar baseline: a Bradley-Terry reward model trains on the same pairs and scores answers."""

from __future__ import annotations

from pathlib import Path

from conj_train.data import load_preferences
from conj_train.io import iter_jsonl, read_json
from conj_train.pipeline.demo import write_demo_data


def _argv(model: Path, data: Path, out: Path, **overrides: object) -> list[str]:
    base: dict[str, object] = {
        "model_name_or_path": model, "dataset_name": data, "output_dir": out, "validation_share": 0.25,
        "learning_rate": 3e-3, "max_steps": 12, "per_device_train_batch_size": 4, "max_length": 128,
        "gradient_checkpointing": False, "logging_steps": 3, "save_steps": 6, "eval_strategy": "no",
        "report_to": "none", "seed": 3, "disable_tqdm": True,
    }
    base.update(overrides)
    return [x for k, v in base.items() for x in (f"--{k}", str(v))]


def test_reward_model_trains_and_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.inference.reward_model import RewardModel
    from conj_train.train.reward import parse_reward_args, run_train_rm

    data = write_demo_data(tmp_path / "fruit.jsonl", n=40)
    out = tmp_path / "rm"
    result = run_train_rm(*parse_reward_args(_argv(tiny_model_dir, data, out)))
    counts = read_json(out / "report.json")["data"]
    assert counts["train"]["used"] + counts["eval"]["used"] == 40 and counts["eval"]["used"] > 0
    losses = [r["loss"] for r in iter_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert result.metrics["eval_accuracy"] >= 0.75
    assert "Bradley-Terry" in (out / "README.md").read_text()
    _card_snippet_runs(out, tmp_path)

    scorer = RewardModel.from_pretrained(out, threads=1)
    records = load_preferences(str(data)).records
    scored = scorer.score_records(records)
    assert [s["pair_id"] for s in scored] == [r["id"] for r in records]
    assert sum(s["correct"] for s in scored) >= 0.8 * len(scored)
    good, bad = scorer.score_pair("Name a fruit.", "Sure: a mango.", "Sure: a hammer.")
    assert good > bad
    # Scores do not depend on the batch a conversation is padded in.
    alone = scorer.score([[{"role": "user", "content": "Name a fruit."},
                           {"role": "assistant", "content": "Sure: a mango."}]])[0]
    assert abs(alone - good) < 1e-4


def test_pairs_from_uses_the_filter_splits(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from conj_train.train.reward import RewardScriptArguments, split_records

    records = load_preferences(str(write_demo_data(tmp_path / "fruit.jsonl", n=12))).records
    ids = [r["id"] for r in records]
    dd = DatasetDict({"train": Dataset.from_dict({"pair_id": ids[:5] + ids[:2]}),  # several pairs per id
                      "validation": Dataset.from_dict({"pair_id": ids[5:7]})})
    dd.save_to_disk(str(tmp_path / "f" / "dataset"))
    by_split, outside = split_records(records, RewardScriptArguments(pairs_from=str(tmp_path / "f")))
    assert [r["id"] for r in by_split["train"]] == ids[:5]
    assert [r["id"] for r in by_split["validation"]] == ids[5:7]
    assert outside == 5


def test_overlong_reward_pairs_are_counted(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from conj_train.train.reward import prepare_rows, reward_row

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    recs = [{"id": str(i), "context": [], "question": "Name a fruit.",
             "chosen": "An apple." + (" It is red and sweet." * 30 if i % 3 == 0 else ""),
             "rejected": "A hammer." + (" It is heavy." * 30 if i % 3 == 1 else "")} for i in range(9)]
    rows, counts = prepare_rows([reward_row(r) for r in recs], tok, max_length=64, cap=8)
    # The cap keeps rows 0-7; rows 0, 3, 6 have a long chosen and rows 1, 4, 7 a long rejected answer.
    assert (counts.read, counts.over_cap, counts.used) == (9, 1, 2)
    assert counts.dropped == {"prompt_too_long": 0, "chosen_too_long": 3, "rejected_too_long": 3}
    assert [r["pair_id"] for r in rows] == ["2", "5"]


def _card_snippet_runs(out: Path, cwd: Path) -> None:
    """The reward model's card validates with huggingface_hub and its usage snippet runs as written."""
    import os
    import subprocess
    import sys

    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-classification" and "reward-model" in card.data.tags
    code = card.text.split("## Usage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rewards = proc.stdout.split()
    assert len(rewards) == 2 and all(float(r) == float(r) for r in rewards)  # two numbers, not NaN
