"""Ingestion of the real public files in shared/data, with counts derived independently from the raw JSON."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from conj_train.data import load_preferences

TAG = "\n\nAssistant:"


def _check_invariant(report) -> None:
    assert report.rows_used + sum(report.skipped.values()) == report.rows_read


def test_hh_rlhf_harmless_base(shared_data: Path) -> None:
    path = shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f]
    res = load_preferences(str(path))
    rep = res.report
    _check_invariant(rep)
    assert rep.format == "hh-rlhf" and rep.rows_read == len(raw) == 2312

    def tail(text: str) -> str:
        return text[text.rfind(TAG) + len(TAG):].strip()

    empty = [i for i, r in enumerate(raw) if not tail(r["chosen"]) or not tail(r["rejected"])]
    assert rep.skipped == {"empty_answer": len(empty)} == {"empty_answer": 4}
    assert rep.skip_examples["empty_answer"] == empty
    # 1,650 rows have >1 human turn before the last answer; one of them diverges earlier between
    # chosen and rejected, so its shared prompt has a single turn (checked by hand).
    assert rep.multi_turn_rows == 1649
    by_row = {r["meta"]["row"]: r for r in res.records}
    checked = 0
    for i, r in enumerate(raw):
        cut = r["chosen"].rfind(TAG)
        if i in by_row and r["rejected"].startswith(r["chosen"][: cut + len(TAG)]):
            prefix = r["chosen"][:cut]
            rec = by_row[i]
            assert rec["question"] == prefix.split("\n\nHuman: ")[-1].strip()
            # Context = every earlier tagged turn (a few transcripts have two assistant turns in a row).
            assert len(rec["context"]) == prefix.count("\n\nHuman:") + prefix.count(TAG) - 1
            start = cut + len(TAG)
            assert rec["chosen"] == r["chosen"][start:].strip()
            assert rec["rejected"] == r["rejected"][start:].strip()
            checked += 1
    assert checked == 2308 - 4  # all used rows but the 4 whose transcripts diverge before the last turn


def _pandalm_expected(raw: list[dict]) -> Counter:
    """Skip counts for PandaLM from the raw rows, in the documented reason order."""
    counts: Counter = Counter()
    seen = set()
    for r in raw:
        votes = Counter(r[f"annotator{k}"] for k in (1, 2, 3))
        label, n = votes.most_common(1)[0]
        if n < 2 or label == 0:
            counts["tie"] += 1
            continue
        pair = (r["response1"], r["response2"])
        chosen, rejected = pair if label == 1 else pair[::-1]
        if not all(isinstance(x, str) for x in (r["instruction"], r["input"], chosen, rejected)):
            counts["non_text_content"] += 1
        elif not chosen.strip() or not rejected.strip():
            counts["empty_answer"] += 1
        elif (r["instruction"], r["input"], chosen, rejected) in seen:
            counts["duplicate_pair"] += 1  # same texts judged for a different model pair (cmp_key)
        else:
            seen.add((r["instruction"], r["input"], chosen, rejected))
    return counts


def test_pandalm_testset(shared_data: Path) -> None:
    path = shared_data / "pandalm-testset-v1.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    rep = load_preferences(str(path)).report
    _check_invariant(rep)
    assert rep.format == "pandalm" and rep.rows_read == len(raw) == 999
    expected = _pandalm_expected(raw)
    assert rep.skipped == dict(expected)
    assert rep.skipped == {"tie": 105, "non_text_content": 6, "empty_answer": 52, "duplicate_pair": 76}
    assert rep.rows_used == 999 - 105 - 6 - 52 - 76


def test_pandalm_question_joins_instruction_and_input(shared_data: Path) -> None:
    path = shared_data / "pandalm-testset-v1.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    for rec in load_preferences(str(path)).records[:50]:
        r = raw[rec["meta"]["row"]]
        assert rec["question"] == (f"{r['instruction']}\n{r['input']}" if r["input"] else r["instruction"])


@pytest.mark.parametrize(("name", "rows"), [("natural", 100), ("adversarial-neighbor", 134),
                                            ("adversarial-gptinst", 92), ("adversarial-gptout", 47),
                                            ("adversarial-manual", 46)])
def test_llmbar_files(shared_data: Path, name: str, rows: int) -> None:
    path = shared_data / "llmbar" / f"{name}.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    res = load_preferences(str(path))
    _check_invariant(res.report)
    assert res.report.format == "llmbar" and res.report.rows_read == res.report.rows_used == len(raw) == rows
    for rec in res.records:
        r = raw[rec["meta"]["row"]]
        winner, loser = ("output_1", "output_2") if r["label"] == 1 else ("output_2", "output_1")
        assert (rec["question"], rec["chosen"], rec["rejected"]) == (r["input"], r[winner], r[loser])
        assert rec["source"] == name
    assert sum(r["label"] == 2 for r in raw) > 0  # label-2 rows exist and were checked above


def test_llmbar_folder_reads_every_subset(shared_data: Path) -> None:
    rep = load_preferences(str(shared_data / "llmbar")).report
    assert rep.rows_read == rep.rows_used == 100 + 134 + 92 + 47 + 46


def test_evalbiasbench(shared_data: Path) -> None:
    path = shared_data / "offsetbias-evalbiasbench.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    res = load_preferences(str(path))
    _check_invariant(res.report)
    assert res.report.format == "evalbiasbench" and res.report.rows_used == 80
    assert Counter(r["source"] for r in res.records) == {k: len(v) for k, v in raw.items()}
    flat = [row for part in raw.values() for row in part]
    for rec in res.records:  # label is always "1": response1 is chosen
        r = flat[rec["meta"]["row"]]
        assert (rec["question"], rec["chosen"], rec["rejected"]) == (r["instruction"], r["response1"],
                                                                     r["response2"])


def test_pandalm_eval_mode_keeps_every_row_with_text(shared_data: Path) -> None:
    path = shared_data / "pandalm-testset-v1.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    res = load_preferences(str(path), mode="eval")
    rep = res.report
    _check_invariant(rep)
    non_text = [i for i, r in enumerate(raw)
                if not all(isinstance(r[k], str) for k in ("instruction", "input", "response1", "response2"))]
    assert rep.skipped == {"non_text_content": len(non_text)}
    assert rep.rows_used == len(raw) - len(non_text) == len(res.records)
    assert len({r["id"] for r in res.records}) == len(res.records)  # repeated pairs stay distinct
    # What training ingestion skips (the non-text rows aside, none of which is a tie) is kept, flagged.
    train = _pandalm_expected(raw)
    assert rep.kept == {k: v for k, v in train.items() if k != "non_text_content"}
    assert rep.kept == {"tie": 105, "empty_answer": 52, "duplicate_pair": 76}
    assert sum(bool(r["meta"].get("tie")) for r in res.records) == 105


def test_llmbar_files_score_the_same_rows_in_eval_mode(shared_data: Path) -> None:
    rep = load_preferences(str(shared_data / "llmbar"), mode="eval").report
    assert rep.rows_read == rep.rows_used == rep.pairs == 419 and rep.kept == {}


def test_canonical_records_read_back_unchanged(shared_data: Path, tmp_path: Path) -> None:
    """Records written by write_records (multi-turn context included) load back as format `conj`, equal."""
    from conj_train.data.records import write_records

    records = load_preferences(str(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz")).records[:200]
    assert any(r["context"] for r in records)
    write_records(tmp_path / "records.jsonl", records)
    again = load_preferences(str(tmp_path / "records.jsonl"))
    assert again.report.format == "conj"
    assert again.records == records
