"""The format warm-up on the tiny model: format-only targets, a model that learns the format, caching."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conj_train.errors import ConjError
from conj_train.train.warmup import WarmupConfig, run_warmup, target_text, warmup_rows


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conj_train.pipeline.demo import write_demo_splits

    train, _ = write_demo_splits(tmp_path_factory.mktemp("toy"), 200, 8, seed=3)
    return train


@pytest.fixture(scope="module")
def warmed(tiny_model_dir: Path, toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> WarmupConfig:
    """A warm-up of 60 steps: enough for the tiny model to write the JSON format most of the time."""
    cfg = WarmupConfig(model_name_or_path=str(tiny_model_dir), dataset_name=str(toy_data),
                       output_dir=str(tmp_path_factory.mktemp("warm") / "out"), learning_rate=2e-2,
                       max_steps=60, per_device_train_batch_size=8, logging_steps=20, threads=1)
    run_warmup(cfg)
    return cfg


def test_targets_parse_to_a_verdict_blind_to_the_label(toy_data: Path) -> None:
    from conj_train.prompts.templates import get_template
    from conj_train.verdicts import parse_verdict

    rows, counts = warmup_rows(WarmupConfig(model_name_or_path="m", dataset_name=str(toy_data), output_dir="o"))
    verdicts = [parse_verdict(r["completion"][0]["content"], "strict").verdict for r in rows]
    assert len(rows) == counts["examples"] == 200
    assert all(r["completion"][0]["content"].startswith(get_template("conj-zh").eval_prefill) for r in rows)
    assert set(verdicts) == {1, 2} and counts["target_verdict_1"] == verdicts.count(1)
    # Drawn from a hash of the pair id: about half agree with the label, so the warmed judge is at chance.
    assert 70 <= counts["target_agrees_with_label"] <= 130
    assert 70 <= counts["target_verdict_1"] <= 130


def test_verdict_seed_changes_the_draws(toy_data: Path) -> None:
    def verdicts(seed: int) -> list[str]:
        rows, _ = warmup_rows(WarmupConfig(model_name_or_path="m", dataset_name=str(toy_data), output_dir="o", verdict_seed=seed))
        return [r["completion"][0]["content"] for r in rows]

    # Pinned: the target verdicts of the first 24 toy pairs (write_demo_splits seed 3) under seeds 0 and
    # 1, computed once; a change in the draw (or in the toy data's ids) would change a cached warm-up.
    digits = {seed: "".join(t.split('": ')[-1][0] for t in verdicts(seed)[:24]) for seed in (0, 1)}
    assert digits == {0: "111122222121211211111221", 1: "212121211111221121221212"}


def test_english_template_and_custom_rationale() -> None:
    from conj_train.verdicts import parse_verdict

    text = target_text(2, template="conj-en", rationale="Slot {verdict} wins.")
    assert text == ' {"reason": "Slot 2 wins.", "better_answer": 2}'
    assert parse_verdict(text, "strict").verdict == 2


def _parse_rate(model_dir: str, prompts: list[str]) -> float:
    from conj_train.inference.judge import Judge

    judge = Judge.from_pretrained(model_dir, probability=False, max_new_tokens=24, threads=1)
    judged = judge.judge_prompts(prompts)
    return sum(j.verdict is not None for j in judged) / len(judged)


def test_warmed_model_writes_parseable_judgments(warmed: WarmupConfig, tiny_model_dir: Path) -> None:
    from conj_train.io import read_json
    from conj_train.pipeline.demo import demo_rows
    from conj_train.prompts.templates import get_template

    out = Path(warmed.output_dir)
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()
    manifest = read_json(out / "manifest.json")
    assert manifest["complete"] and manifest["config_hash"] == warmed.output_hash()
    assert manifest["metrics"]["steps"] == 60
    tpl = get_template("conj-zh")
    prompts = [tpl.judge_prompt(r["prompt"], r["chosen"], r["rejected"]) for r in demo_rows(8, seed=99)]
    assert _parse_rate(str(out), prompts) > _parse_rate(str(tiny_model_dir), prompts)


def test_rerun_is_a_noop_and_a_changed_config_is_refused(warmed: WarmupConfig) -> None:
    again = run_warmup(replace(warmed, threads=2, logging_steps=5))  # runtime-only fields differ
    assert again.skipped and "already done" in again.summary
    with pytest.raises(ConjError, match="different config"):
        run_warmup(replace(warmed, learning_rate=5e-3))


def test_a_foreign_output_folder_is_refused(tiny_model_dir: Path, toy_data: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    cfg = WarmupConfig(model_name_or_path=str(tiny_model_dir), dataset_name=str(toy_data), output_dir=str(tmp_path), max_steps=1)
    with pytest.raises(ConjError, match="not a warm-up output"):
        run_warmup(cfg)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("changes", "message"), [
    ({"rationale": "no slot here"}, "must contain"),
    ({"model_name_or_path": ""}, "'model_name_or_path' is required"),
    ({"num_train_epochs": 0, "max_steps": 0}, "num_train_epochs"),
])
def test_bad_config_is_a_user_error(changes: dict, message: str) -> None:
    with pytest.raises(ConjError, match=message):
        run_warmup(replace(WarmupConfig(model_name_or_path="m", dataset_name="d", output_dir="o"), **changes))


# --- the demo's toy splits (conj_train.pipeline.demo), which the warm-up and the demo train on -------------


def test_demo_splits_are_disjoint_and_seeded() -> None:
    from conj_train.pipeline.demo import demo_splits

    train, test = demo_splits(300, 50, seed=1)
    keys = [(r["chosen"], r["rejected"]) for r in train + test]
    assert (len(train), len(test)) == (300, 50) and len(set(keys)) == 350
    assert demo_splits(300, 50, seed=1) == (train, test)
    assert demo_splits(300, 50, seed=2)[1] != test


def test_demo_split_words_are_single_tokens_of_the_tiny_tokenizer(tiny_model_dir: Path) -> None:
    # Why it matters: names split into characters made the rule unlearnable on most seeds (docs/demo.md).
    from transformers import AutoTokenizer

    from conj_train.pipeline.demo import _SPLIT_FRUITS, _SPLIT_OTHERS

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    split = {w: tok.tokenize(" " + w) for w in _SPLIT_FRUITS + _SPLIT_OTHERS}
    assert {w: t for w, t in split.items() if len(t) != 1} == {}


def test_demo_splits_refuse_more_pairs_than_exist() -> None:
    from conj_train.pipeline.demo import demo_splits

    with pytest.raises(ConjError, match="train_pairs"):
        demo_splits(10**6, 10)


def test_varied_demo_splits_hold_long_answers_on_both_sides_and_keep_the_rule(tmp_path: Path) -> None:
    from conj_train.pipeline.demo import _SPLIT_FRUITS, demo_splits, write_demo_splits

    train, test = demo_splits(800, 200, seed=0, varied=True)
    longer_chosen = sum(len(r["chosen"]) > 2 * len(r["rejected"]) for r in train)
    longer_rejected = sum(len(r["rejected"]) > 2 * len(r["chosen"]) for r in test)
    assert longer_chosen > 40 and longer_rejected > 10
    assert all(r["chosen"].rstrip(".").split()[-1] in _SPLIT_FRUITS for r in train + test)
    write_demo_splits(tmp_path, 50, 10, seed=0)
    lines = {p.name: len(p.read_text().splitlines()) for p in tmp_path.glob("*.jsonl")}
    assert lines == {"train.jsonl": 50, "test.jsonl": 10, "train-varied.jsonl": 200, "test-varied.jsonl": 40}


def test_length_selection_keeps_pairs_with_the_named_answer_over_the_ratio() -> None:
    from conj_train.config import select_by_length

    rows = [{"chosen": "a" * c, "rejected": "b" * r} for c, r in ((10, 4), (10, 5), (3, 9), (5, 5))]
    assert select_by_length(rows, None, 2.0) == rows
    assert select_by_length(rows, "chosen", 2.0) == [rows[0]]
    assert select_by_length(rows, "rejected", 2.0) == [rows[2]]
    with pytest.raises(ConjError, match="no pair"):
        select_by_length(rows[3:], "chosen", 2.0)
    with pytest.raises(ConjError, match="longer must be"):
        select_by_length(rows, "both", 2.0)
