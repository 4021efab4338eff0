"""Stage 2 on hand-built sampling runs: accounting, splits, report, reruns, CLI, a DPO step, end to end."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from conj_train.config.parser import build_config
from conj_train.errors import ConjError
from conj_train.filter.run import FilterConfig, run_filter
from conj_train.io import iter_jsonl, read_json
from conj_train.prompts.chat import chat_messages

N_PAIRS = 40
# Pattern of pair i (i % 5): what its judgments look like and what it must yield.
#   0 mixed repeated + good hints -> best_of_n 1, positive2unknown 1, preamble 1
#   1 all right (two identical texts) + good hints -> preamble 1
#   2 all wrong, no hints -> lost all_wrong_no_hint
#   3 unparseable repeated (one truncated) + wrong-sided hints -> lost all_unparseable_hint_failed
#   4 nothing sampled -> lost skipped_at_sampling
PER_PATTERN = N_PAIRS // 5


def _verdict_text(verdict: int, why: str) -> str:
    return json.dumps({"原因": why, "更好的回答": verdict}, ensure_ascii=False)


def _judgments(pid: str, label: int, pattern: int) -> list[dict]:
    right, wrong = label, 3 - label
    rows: list[tuple[str, int, str, str]] = []  # kind, index, text, finish_reason
    if pattern == 0:
        rows += [("repeated", 0, _verdict_text(right, f"{pid} a is right"), "stop"),
                 ("repeated", 1, _verdict_text(right, f"{pid} b is right"), "stop"),
                 ("repeated", 2, _verdict_text(wrong, f"{pid} wrong"), "stop"),
                 ("repeated", 3, "I think so", "stop")]
    elif pattern == 1:
        rows += [("repeated", i, _verdict_text(right, "same text" if i < 2 else f"{pid} r{i}"), "stop")
                 for i in range(4)]
    elif pattern == 2:
        rows += [("repeated", i, _verdict_text(wrong, f"{pid} w{i}"), "stop") for i in range(4)]
    elif pattern == 3:
        rows += [("repeated", 0, '{"原因": "cut off', "length"), ("repeated", 1, "no verdict", "stop")]
        rows += [("hint_correct", 0, _verdict_text(wrong, "disobeyed"), "stop"),
                 ("hint_wrong", 0, _verdict_text(right, "disobeyed too"), "stop")]
    if pattern in (0, 1):
        rows += [("hint_correct", 0, _verdict_text(right, f"{pid} told right"), "stop"),
                 ("hint_wrong", 0, _verdict_text(wrong, f"{pid} told wrong"), "stop")]
    return [{"judgment_id": f"{pid}:{k}:{i}", "pair_id": pid, "kind": k, "index": i, "label": label,
             "hint_verdict": None if k == "repeated" else (label if k == "hint_correct" else 3 - label),
             "prompt_hash": "h", "text": t, "finish_reason": f, "prompt_tokens": 10,
             "completion_tokens": 5, "seed": 1} for k, i, t, f in rows]


def make_sample_dir(root: Path, model: Path, *, system_prompt: str | None = None) -> Path:
    """A finished sampling run written by hand (two shards, like a data-parallel run)."""
    prompts: list[list[dict]] = [[], []]
    judgments: list[list[dict]] = [[], []]
    for i in range(N_PAIRS):
        pid, label = f"q{i:03d}", 1 if i % 3 else 2  # two thirds label 1
        shard = i % 2
        prompt = f"Question {i}: which fruit? Answer 1: apple {i}. Answer 2: stone {i}."
        prompts[shard].append({"pair_id": pid, "label": label, "prompt": prompt, "question": f"Q{i}",
                               "answer1": "a", "answer2": "b", "template": "conj-zh", "prompt_hash": "x",
                               "messages": chat_messages(prompt, system=system_prompt)})
        judgments[shard] += _judgments(pid, label, i % 5)
    for shard in range(2):
        for sub, rows in (("prompts", prompts[shard]), ("judgments", judgments[shard])):
            path = root / sub / f"shard-{shard:05d}-of-00002.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config = {"model_name_or_path": str(model), "system_prompt": system_prompt, "template": "conj-zh", "n": 4,
              "hint_samples": 1, "hint_reading": "paper"}
    (root / "manifest.json").write_text(json.dumps({"stage": "sample", "complete": True, "config": config,
                                                    "config_hash": "abc", "shards": 2}))
    return root


@pytest.fixture
def sample_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    return make_sample_dir(tmp_path / "sample", tiny_model_dir)


def _cfg(sample: Path, out: Path, **kw) -> FilterConfig:
    """A FilterConfig from flat recipe keys (its rule settings land in ``rules`` / ``length``)."""
    values = {"dataset_name": str(sample), "output_dir": str(out), "validation_share": 0.3, **kw}
    return build_config(FilterConfig, values)


def test_every_pair_and_judgment_is_accounted_for(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "filter"
    res = run_filter(_cfg(sample_dir, out, dedup_texts=True, drop_identical=True))
    rep = read_json(out / "report.json")
    n_judgments = sum(1 for p in (sample_dir / "judgments").glob("*.jsonl") for _ in iter_jsonl(p))
    assert rep["judgments_read"] == n_judgments == sum(rep["judgments_by_class"].values())
    assert sum(sum(c.values()) for c in rep["judgments_by_kind"].values()) == n_judgments
    assert rep["input_pairs"] == N_PAIRS == rep["input_pairs_with_pairs"] + rep["lost"]
    assert sum(rep["lost_reasons"].values()) == rep["lost"]
    assert sum(rep["pairs_per_input_pair"].values()) == N_PAIRS
    assert sum(rep["pairs_by_type"].values()) == rep["pairs_total"] == res.counts["train"] + res.counts["validation"]
    assert rep["pairs_by_type"] == {"best_of_n": PER_PATTERN, "best_of_n_positive2unknown": PER_PATTERN,
                                    "preamble": 2 * PER_PATTERN, "preamble2unknown": 0}
    assert rep["lost_reasons"] == {"all_wrong_no_hint": PER_PATTERN, "all_unparseable_hint_failed": PER_PATTERN,
                                   "skipped_at_sampling": PER_PATTERN}
    assert rep["pairs_per_input_pair"] == {"0": 3 * PER_PATTERN, "1": PER_PATTERN, "2": 0,
                                           "3": PER_PATTERN}
    assert rep["unparseable_reasons"] == {"no_json": 2 * PER_PATTERN, "truncated": PER_PATTERN}
    assert rep["repeated_profile"] == {"mixed": PER_PATTERN, "all_right": PER_PATTERN, "all_wrong": PER_PATTERN,
                                       "all_unparseable": PER_PATTERN, "no_repeated": PER_PATTERN}
    assert rep["duplicates_removed"] == PER_PATTERN
    assert "nothing to do" not in res.summary and "lost input pairs: 24" in res.summary


def test_split_is_by_pair_id_and_rows_are_trl_preference_rows(sample_dir: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk

    out = tmp_path / "filter"
    run_filter(_cfg(sample_dir, out))
    dd = load_from_disk(str(out / "dataset"))
    train_ids, val_ids = set(dd["train"]["pair_id"]), set(dd["validation"]["pair_id"])
    assert train_ids and val_ids and not train_ids & val_ids
    row = dd["train"][0]
    assert [m["role"] for m in row["prompt"]] == ["user"] and row["prompt"][0]["content"].startswith("Question")
    assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
    assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    for split in ("train", "validation"):
        assert [r["pair_id"] for r in iter_jsonl(out / f"{split}.jsonl")] == dd[split]["pair_id"]
    for r in dd["train"]:
        assert json.loads(r["chosen"][0]["content"])["更好的回答"] == r["label"]
        assert r["chosen_judgment_id"].startswith(r["pair_id"] + ":")


def test_verdict_only_drops_the_rationale_but_not_unparseable_texts(sample_dir: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk

    full, bare = tmp_path / "full", tmp_path / "bare"
    run_filter(_cfg(sample_dir, full))
    run_filter(_cfg(sample_dir, bare, verdict_only=True))
    a, b = load_from_disk(str(full / "dataset"))["train"], load_from_disk(str(bare / "dataset"))["train"]
    assert a["pair_id"] == b["pair_id"] and a["pair_type"] == b["pair_type"]
    for ra, rb in zip(a, b, strict=True):
        assert rb["chosen"][0]["content"] == json.dumps({"更好的回答": ra["label"]}, ensure_ascii=False)
        rejected = rb["rejected"][0]["content"]
        if ra["pair_type"] == "best_of_n_positive2unknown":
            assert rejected == ra["rejected"][0]["content"]  # no verdict to keep: written as sampled
        else:
            assert rejected == json.dumps({"更好的回答": 3 - ra["label"]}, ensure_ascii=False)


def test_system_prompt_of_sampling_is_kept(tmp_path: Path, tiny_model_dir: Path) -> None:
    sample = make_sample_dir(tmp_path / "sample", tiny_model_dir, system_prompt="")
    run_filter(_cfg(sample, tmp_path / "filter"))
    row = next(iter_jsonl(tmp_path / "filter" / "train.jsonl"))
    assert row["prompt"][0] == {"role": "system", "content": ""} and row["prompt"][1]["role"] == "user"


def test_rows_take_the_prompt_messages_sampling_wrote(sample_dir: Path, tmp_path: Path) -> None:
    # The DPO prompt comes from the prompt records, not from the sampling config: a system turn
    # written there (and absent from the config) reaches every row unchanged.
    for path in (sample_dir / "prompts").glob("*.jsonl"):
        rows = list(iter_jsonl(path))
        for r in rows:
            r["messages"] = [{"role": "system", "content": f"judge {r['pair_id']}"}, *r["messages"]]
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "filter"
    run_filter(_cfg(sample_dir, out))
    rows = [r for s in ("train", "validation") for r in iter_jsonl(out / f"{s}.jsonl")]
    assert rows and all(r["prompt"][0] == {"role": "system", "content": f"judge {r['pair_id']}"} for r in rows)
    assert all(r["prompt"][1]["role"] == "user" and r["prompt"][1]["content"].startswith("Question")
               for r in rows)


def test_a_sampling_run_without_prompt_messages_asks_to_sample_again(sample_dir: Path, tmp_path: Path) -> None:
    path = sample_dir / "prompts" / "shard-00001-of-00002.jsonl"
    rows = list(iter_jsonl(path))
    for r in rows:
        del r["messages"]  # a folder written before sampling stored the DPO prompt turns
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ConjError, match=r"shard-00001-of-00002\.jsonl: row 1 has no DPO prompt 'messages'.*"
                                        r"re-run `conj sample`"):
        run_filter(_cfg(sample_dir, tmp_path / "f"))
    assert not (tmp_path / "f" / "manifest.json").exists()
    rows[0]["messages"] = [{"role": "assistant", "content": "x"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ConjError, match="ending with the user's judge prompt"):
        run_filter(_cfg(sample_dir, tmp_path / "f"))


def test_report_files_and_manifest(sample_dir: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "filter"
    run_filter(_cfg(sample_dir, out))
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| best_of_n | 8 |" in md and "lost: skipped_at_sampling" in md
    manifest = read_json(out / "manifest.json")
    assert manifest["complete"] and manifest["counts"]["input_pairs"] == N_PAIRS
    assert manifest["input"]["hash"] and manifest["tokenizer"] == {"name": str(tiny_model_dir), "used": False}


def test_balance_makes_each_split_exact(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "filter"
    run_filter(_cfg(sample_dir, out, balance=True, max_best_of_n=0))
    rep = read_json(out / "report.json")
    for split, labels in rep["label_balance"]["after"].items():
        assert labels["label_1"] == labels["label_2"], split
    before = rep["label_balance"]["before"]
    assert before["train"]["label_1"] > before["train"]["label_2"]
    n_before = sum(b["label_1"] + b["label_2"] for b in before.values())
    assert rep["pairs_dropped"]["balance"] == n_before - rep["pairs_total"] > 0
    assert rep["input_pairs_with_pairs"] + rep["lost"] == N_PAIRS
    assert sum(rep["lost_reasons"].values()) == rep["lost"]


def test_empty_validation_split_is_saved(sample_dir: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk

    out = tmp_path / "filter"
    res = run_filter(_cfg(sample_dir, out, validation_share=0.0))
    dd = load_from_disk(str(out / "dataset"))
    assert dd["validation"].num_rows == 0 == res.counts["validation"]
    assert dd["validation"].column_names == dd["train"].column_names
    assert dd["train"].num_rows == res.counts["pairs"] > 0
    assert (out / "validation.jsonl").read_text() == ""


def test_length_rule_uses_the_sampling_models_tokenizer(sample_dir: Path, tmp_path: Path,
                                                        tiny_model_dir: Path) -> None:
    # Replace the hint_correct output of pair q000 (pattern 0, label 2) by a long JSON judgment.
    path = sample_dir / "judgments" / "shard-00000-of-00002.jsonl"
    rows = list(iter_jsonl(path))
    long_text = _verdict_text(2, "回答2的结果是正确的，回答1有错误。" * 60)
    for r in rows:
        if r["judgment_id"] == "q000:hint_correct:0":
            r["text"] = long_text
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "filter"
    run_filter(_cfg(sample_dir, out))
    assert read_json(out / "report.json")["length_rule"] == {"cut": 1}
    assert read_json(out / "manifest.json")["tokenizer"] == {"name": str(tiny_model_dir), "used": True}
    rows = [r for s in ("train", "validation") for r in iter_jsonl(out / f"{s}.jsonl")]
    (preamble,) = [r for r in rows if r["pair_id"] == "q000" and r["pair_type"] == "preamble"]
    chosen = preamble["chosen"][0]["content"]
    assert len(chosen) < len(long_text) and json.loads(chosen)["更好的回答"] == 2


def test_rerun_is_noop_changed_config_refused_unless_overwrite(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "filter"
    first = run_filter(_cfg(sample_dir, out))
    again = run_filter(_cfg(sample_dir, out))
    assert again.skipped and "nothing to do" in again.summary and again.counts == first.counts
    with pytest.raises(ConjError, match="different config"):
        run_filter(_cfg(sample_dir, out, preset="paper"))
    redone = run_filter(_cfg(sample_dir, out, preset="paper", overwrite=True))
    assert not redone.skipped
    # The paper preset drops the hint pairs of the mixed pattern only.
    assert read_json(out / "report.json")["pairs_by_type"]["preamble"] == PER_PATTERN


def test_incomplete_run_and_bad_options_are_refused(sample_dir: Path, tmp_path: Path) -> None:
    (sample_dir / "manifest.json").unlink()
    with pytest.raises(ConjError, match=r"no manifest\.json"):
        run_filter(_cfg(sample_dir, tmp_path / "f"))
    with pytest.raises(ConjError, match="validation_share"):
        run_filter(FilterConfig(dataset_name="s", output_dir="o", validation_share=1.5))


def test_bad_judgment_row_names_file_row_and_field(sample_dir: Path, tmp_path: Path) -> None:
    path = sample_dir / "judgments" / "shard-00001-of-00002.jsonl"
    rows = list(iter_jsonl(path))
    del rows[2]["text"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConjError, match=r"shard-00001-of-00002\.jsonl: row 3 has no field 'text'"):
        run_filter(_cfg(sample_dir, tmp_path / "f"))


def test_cli_runs_the_stage_from_a_recipe(sample_dir: Path, tmp_path: Path, capsys) -> None:
    from conj_train.cli import main

    recipe = tmp_path / "filter.yaml"
    recipe.write_text(f"dataset_name: {sample_dir}\noutput_dir: {tmp_path / 'cli'}\npreset: code\n")
    assert main(["filter", "--config", str(recipe), "--validation_share", "0.3"]) == 0
    assert "DPO pairs" in capsys.readouterr().out
    assert read_json(tmp_path / "cli" / "manifest.json")["config"]["validation_share"] == 0.3
    assert main(["filter", "--config", str(recipe), "--max_hints", "2"]) == 2
    assert "did you mean 'max_hint'" in capsys.readouterr().err


def test_dataset_trains_one_dpo_step(sample_dir: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = tmp_path / "filter"
    run_filter(_cfg(sample_dir, out))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, bf16=False,
                     use_cpu=True, gradient_checkpointing=False, report_to="none", save_strategy="no",
                     max_length=512)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, processing_class=tok,
                         train_dataset=load_from_disk(str(out / "dataset"))["train"])
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)


def test_sampling_then_filter_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.sample.run import SampleConfig, run_sample

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Name fruit {i}.", "chosen": f"An apple {i}.",
                                        "rejected": f"A hammer {i}."}) + "\n" for i in range(6)))
    sample = tmp_path / "sample"
    run_sample(SampleConfig(model_name_or_path=str(tiny_model_dir), dataset_name=str(data), output_dir=str(sample), n=4,
                            hint_samples=1, max_new_tokens=16, progress=False, threads=1))
    res = run_filter(FilterConfig(dataset_name=str(sample), output_dir=str(tmp_path / "filter")))
    rep = read_json(tmp_path / "filter" / "report.json")
    assert rep["input_pairs"] == 6 and rep["judgments_read"] == 6 * (4 + 2)
    assert sum(rep["judgments_by_class"].values()) == 36
    assert rep["input_pairs_with_pairs"] + rep["lost"] == 6
    assert sum(rep["pairs_by_type"].values()) == res.counts["train"] + res.counts["validation"]
    rows = [r for s in ("train", "validation") for r in iter_jsonl(tmp_path / "filter" / f"{s}.jsonl")]
    counts = Counter(r["pair_type"] for r in rows)
    assert dict(counts) == {t: v for t, v in rep["pairs_by_type"].items() if v}
    # Each row's prompt is the messages sampling wrote for its pair.
    messages = {r["pair_id"]: r["messages"] for p in (sample / "prompts").glob("*.jsonl") for r in iter_jsonl(p)}
    assert all(r["prompt"] == messages[r["pair_id"]] for r in rows)
    assert all(m == [{"role": "user", "content": m[0]["content"]}] for m in messages.values())


def test_unparseable_chosen_trains_only_under_code_and_never_silently(sample_dir: Path, tmp_path: Path) -> None:
    # Pattern 1 (all right) with an unparseable hint_correct output: its hint pair's chosen side has
    # no verdict (preamble2unknown), as for most pairs of a weak judge.
    for path in (sample_dir / "judgments").glob("*.jsonl"):
        rows = list(iter_jsonl(path))
        for r in rows:
            if r["kind"] == "hint_correct" and int(r["pair_id"][1:]) % 5 == 1:
                r["text"] = "I would say the first"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    code = run_filter(_cfg(sample_dir, tmp_path / "code"))
    report = read_json(tmp_path / "code" / "report.json")
    assert report["pairs_unparseable_chosen"] == PER_PATTERN
    assert code.summary.startswith(f"WARNING: {PER_PATTERN} of ")
    paper = run_filter(_cfg(sample_dir, tmp_path / "paper", preset="paper"))
    report = read_json(tmp_path / "paper" / "report.json")
    assert report["pairs_unparseable_chosen"] == 0
    assert report["pairs_dropped"]["unparseable_chosen"] == PER_PATTERN
    assert f"dropped {PER_PATTERN} pairs whose chosen judgment is unparseable" in paper.summary


def test_length_rule_key_is_the_sampling_templates() -> None:
    from conj_train.filter.run import _rationale_key

    assert _rationale_key({"template": "conj-zh"}) == _rationale_key({}) == "原因"
    assert _rationale_key({"template": "conj-en"}) == "reason"
