"""``conj data relevance``: relevance pairs (own answer vs another question's answer), one behaviour each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conj_train.data.relevance import RelevanceOptions, build_relevance_pairs, side_of
from conj_train.errors import ConjError


def conj(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conj_train", *args], capture_output=True, text=True,
                          timeout=120)


def rec(i: int, question: str | None = None, answer: str | None = None, context: list | None = None) -> dict:
    return {"id": f"r{i}", "context": context or [], "question": question or f"question number {i} about topic {i}",
            "chosen": answer or f"an answer written for question {i} only", "rejected": f"worse answer {i}",
            "source": "s", "meta": {}}


RECORDS = [rec(i) for i in range(40)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_record_is_a_pair_or_a_counted_skip() -> None:
    records = [*RECORDS, rec(99, question=RECORDS[0]["question"]),  # repeated question
               rec(100, answer="Can you say more?"), rec(101, answer="can you  say MORE?"),  # shared answer
               rec(102, answer="ok"), rec(103, answer="x " * 400)]
    sides, report = build_relevance_pairs(records, RelevanceOptions(min_answer_words=2, max_chars=300))
    assert report.records_in == len(records) and report.accounted
    assert report.skipped == {"repeated_question": 1, "generic_answer": 3, "too_long": 1}
    assert sum(len(v) for v in sides.values()) == 40


def test_chosen_is_own_answer_and_rejected_another_questions_answer() -> None:
    sides, _ = build_relevance_pairs(RECORDS, RelevanceOptions())
    own = {r["question"]: r["chosen"] for r in RECORDS}
    answers = set(own.values())
    for pair in [*sides["train"], *sides["heldout"]]:
        assert pair["chosen"] == own[pair["question"]]
        assert pair["rejected"] in answers and pair["rejected"] != pair["chosen"]


def test_sides_are_disjoint_and_donate_only_within_their_side() -> None:
    sides, _ = build_relevance_pairs(RECORDS, RelevanceOptions(heldout_percent=50))
    own_side = {r["chosen"]: side_of(r, 50) for r in RECORDS}
    assert sides["train"] and sides["heldout"]
    assert not {p["question"] for p in sides["train"]} & {p["question"] for p in sides["heldout"]}
    for side, pairs in sides.items():
        assert all(own_side[p["rejected"]] == side for p in pairs), side


def test_same_seed_same_pairs_whatever_the_input_order() -> None:
    a, _ = build_relevance_pairs(RECORDS, RelevanceOptions(seed=3))
    b, _ = build_relevance_pairs(list(reversed(RECORDS)), RelevanceOptions(seed=3))
    c, _ = build_relevance_pairs(RECORDS, RelevanceOptions(seed=4))
    assert a == b
    assert [p["rejected"] for p in a["train"]] != [p["rejected"] for p in c["train"]]


def test_neighbor_donor_is_the_most_similar_other_question() -> None:
    records = [rec(0, "how do I bake a chocolate cake at home"), rec(1, "how do I bake a lemon cake at home"),
               rec(2, "what is the capital city of France"), rec(3, "what is the capital city of Peru")]
    sides, _ = build_relevance_pairs(records, RelevanceOptions(heldout_percent=0, negative="neighbor"))
    donor_of = {p["question"]: p["rejected"] for p in sides["train"]}
    assert donor_of[records[0]["question"]] == records[1]["chosen"]
    assert donor_of[records[2]["question"]] == records[3]["chosen"]
    assert all(0 < p["meta"]["relevance"]["similarity"] <= 100 for p in sides["train"])


def test_a_lone_question_has_no_donor() -> None:
    sides, report = build_relevance_pairs([rec(0)], RelevanceOptions(heldout_percent=0))
    assert sides["train"] == [] and report.skipped == {"no_donor": 1} and report.accounted


def test_bad_option_is_one_line() -> None:
    with pytest.raises(ConjError, match="heldout_percent"):
        build_relevance_pairs(RECORDS, RelevanceOptions(heldout_percent=101))


def test_cli_writes_both_sides_and_a_report(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "prefs.jsonl", [{"prompt": r["question"], "chosen": r["chosen"],
                                                 "rejected": r["rejected"]} for r in RECORDS])
    out = tmp_path / "rel"
    proc = conj("data", "relevance", str(src), "-o", str(out), "--heldout-percent", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["ingest"]["rows_read"] == 40 and info["relevance"]["accounted"]
    n = {side: len((out / f"{side}.jsonl").read_text().splitlines()) for side in ("train", "heldout")}
    assert n == info["relevance"]["pairs"] and sum(n.values()) == 40
    check = conj("data", "check", str(out / "train.jsonl"), "--json")  # the output reads back as data
    assert check.returncode == 0 and json.loads(check.stdout)["rows_used"] == n["train"]


def test_cli_refuses_output_inside_the_source(tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.mkdir()
    write_rows(src / "prefs.jsonl", [{"prompt": "P", "chosen": "C", "rejected": "R"}])
    proc = conj("data", "relevance", str(src), "-o", str(src / "rel"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "is inside the input" in proc.stderr


def test_cli_bad_value_is_one_line(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "prefs.jsonl", [{"prompt": "P", "chosen": "C", "rejected": "R"}])
    proc = conj("data", "relevance", str(src), "-o", str(tmp_path / "o"), "--max-chars", "-1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_hh_rlhf_relevance_sides_are_disjoint(shared_data: Path, tmp_path: Path) -> None:
    proc = conj("data", "relevance", str(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz"), "-o",
                str(tmp_path / "hh"), "--max-chars", "600", "--min-answer-words", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    rel = json.loads(proc.stdout)["relevance"]
    assert rel["accounted"] and rel["pairs"]["heldout"] >= 300
    rows = {s: [json.loads(x) for x in (tmp_path / "hh" / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "heldout")}
    key = lambda r: json.dumps([r["context"], r["question"]])  # noqa: E731
    assert not {key(r) for r in rows["train"]} & {key(r) for r in rows["heldout"]}
    assert not {r["chosen"] for r in rows["train"]} & {r["rejected"] for r in rows["heldout"]}
