"""Format adapters, skip reasons, ids, file types, field mapping, multi-turn and decontamination."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from conj_train.data import SKIP_REASONS, load_preferences, read_records, write_records
from conj_train.errors import ConjError


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


def write(path: Path, data: object) -> Path:
    if path.name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load(tmp_path: Path, data: object, name: str = "data.jsonl", **kw):
    """Write ``data`` and load it, checking the row-accounting invariant every time."""
    result = load_preferences(str(write(tmp_path / name, data)), **kw)
    rep = result.report
    assert rep.rows_used + sum(rep.skipped.values()) == rep.rows_read
    assert rep.pairs == len(result.records) >= rep.rows_used  # RM-Bench rows hold 9 pairs each
    return result


def triples(result) -> list[tuple[str, str, str]]:
    return [(r["question"], r["chosen"], r["rejected"]) for r in result.records]


# --- one test per format ---------------------------------------------------------------------------

def test_skywork_conversations(tmp_path: Path) -> None:
    rows = [
        {"chosen": [u("Q"), a("good")], "rejected": [u("Q"), a("bad")], "source": "magpie_ultra"},
        {"chosen": [{"role": "system", "content": "S"}, u("Q1"), a("A1"), u("Q2"), a("good2")],
         "rejected": [{"role": "system", "content": "S"}, u("Q1"), a("A1"), u("Q2"), a("bad2")],
         "source": "helpsteer2"},
    ]
    res = load(tmp_path, rows)
    assert res.report.format == "skywork"
    assert triples(res) == [("Q", "good", "bad"), ("Q2", "good2", "bad2")]
    assert res.records[0]["context"] == []
    assert res.records[1]["context"] == [{"role": "system", "content": "S"}, u("Q1"), a("A1")]
    assert [r["source"] for r in res.records] == ["magpie_ultra", "helpsteer2"]
    assert res.report.multi_turn_rows == 1


def test_multi_turn_first_turn_reproduces_conj(tmp_path: Path) -> None:
    rows = [{"chosen": [{"role": "system", "content": "S"}, u("Q1"), a("A1"), u("Q2"), a("good")],
             "rejected": [{"role": "system", "content": "S"}, u("Q1"), a("A1"), u("Q2"), a("bad")]}]
    rec = load(tmp_path, rows, multi_turn="first_turn").records[0]
    assert (rec["context"], rec["question"], rec["chosen"], rec["rejected"]) == ([], "Q1", "good", "bad")


def test_trl_standard_explicit_and_implicit(tmp_path: Path) -> None:
    explicit = load(tmp_path, [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}])
    assert explicit.report.format == "trl-standard"
    assert triples(explicit) == [("The sky is", " blue.", " green.")]
    implicit = load(tmp_path, [{"chosen": "The sky is blue.", "rejected": "The sky is green."},
                               {"chosen": "The sky is blue.", "rejected": "The sky is bright."}], "i.jsonl")
    assert implicit.report.format == "trl-standard"
    # The shared "b" of blue/bright stays in the answers: the prompt ends at a word boundary.
    assert triples(implicit) == [("The sky is", "blue.", "green."), ("The sky is", "blue.", "bright.")]


def test_trl_conversational(tmp_path: Path) -> None:
    rows = [{"prompt": [u("What color is the sky?")], "chosen": [a("It is blue.")],
             "rejected": [a("It is green.")]}]
    res = load(tmp_path, rows)
    assert res.report.format == "trl-conversational"
    assert triples(res) == [("What color is the sky?", "It is blue.", "It is green.")]


def test_ultrafeedback_scores_and_ties(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Q", "prompt_id": "p1", "chosen": [u("Q"), a("A1")], "rejected": [u("Q"), a("A2")],
         "messages": [u("Q"), a("A1")], "score_chosen": 8.5, "score_rejected": 6.0},
        {"prompt": "R", "prompt_id": "p2", "chosen": [u("R"), a("B1")], "rejected": [u("R"), a("B2")],
         "messages": [u("R"), a("B1")], "score_chosen": 7.0, "score_rejected": 7.0},
    ]
    res = load(tmp_path, rows)
    assert res.report.format == "ultrafeedback"
    assert triples(res) == [("Q", "A1", "A2")]
    assert res.records[0]["meta"]["score_chosen"] == 8.5
    assert res.report.skipped == {"tie": 1} and res.report.skip_examples == {"tie": [1]}


def test_argilla_style_maps_to_ultrafeedback(tmp_path: Path) -> None:
    rows = [{"prompt": "Q", "chosen": [u("Q"), a("A1")], "rejected": [u("Q"), a("A2")],
             "chosen-rating": 5, "rejected-rating": 3, "chosen-model": "m1", "rejected-model": "m2"},
            {"prompt": "Q2", "chosen": [u("Q2"), a("B1")], "rejected": [u("Q2"), a("B2")],
             "chosen-rating": 4, "rejected-rating": 4, "chosen-model": "m1", "rejected-model": "m2"}]
    res = load(tmp_path, rows)
    assert res.report.format == "ultrafeedback"
    assert triples(res) == [("Q", "A1", "A2")] and res.report.skipped == {"tie": 1}


HH = {"chosen": "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant: GOOD",
      "rejected": "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant: BAD"}


def test_hh_rlhf_transcripts(tmp_path: Path) -> None:
    res = load(tmp_path, [HH, {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
                               "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}])
    assert res.report.format == "hh-rlhf"
    assert triples(res) == [("Q2", "GOOD", "BAD"), ("Hi", "Hello!", "Go away.")]
    assert res.records[0]["context"] == [u("Q1"), a("A1")]
    first = load(tmp_path, [HH], "f.jsonl", multi_turn="first_turn").records[0]
    assert (first["context"], first["question"], first["chosen"]) == ([], "Q1", "GOOD")


def test_hh_transcripts_given_as_trl_standard_are_parsed_as_hh(tmp_path: Path) -> None:
    res = load(tmp_path, [HH], format="trl-standard")
    assert triples(res) == [("Q2", "GOOD", "BAD")] and res.records[0]["context"] == [u("Q1"), a("A1")]


def test_pku_saferlhf_better_and_safer(tmp_path: Path) -> None:
    rows = [{"prompt": "P", "response_0": "R0", "response_1": "R1", "prompt_source": "Alpaca",
             "is_response_0_safe": True, "is_response_1_safe": False,
             "better_response_id": 1, "safer_response_id": 0}]
    better = load(tmp_path, rows)
    assert better.report.format == "pku-saferlhf"
    assert triples(better) == [("P", "R1", "R0")]
    assert triples(load(tmp_path, rows, "s.jsonl", pku_label="safer")) == [("P", "R0", "R1")]


def test_rewardbench_source_is_subset(tmp_path: Path) -> None:
    rows = [{"prompt": "P", "chosen": "C", "rejected": "R", "subset": "alpacaeval-easy", "id": 7}]
    res = load(tmp_path, rows)
    assert res.report.format == "rewardbench"
    assert triples(res) == [("P", "C", "R")]
    assert res.records[0]["source"] == "alpacaeval-easy" and res.records[0]["meta"]["original_id"] == "7"


def test_llmbar_labels_and_subset_source(tmp_path: Path) -> None:
    rows = [{"input": "I1", "output_1": "X", "output_2": "Y", "label": 1},
            {"input": "I2", "output_1": "X", "output_2": "Y", "label": 2},
            {"input": "I3", "output_1": "X", "output_2": "Y", "label": 3}]
    res = load(tmp_path, rows, "natural.json")
    assert res.report.format == "llmbar"
    assert triples(res) == [("I1", "X", "Y"), ("I2", "Y", "X")]
    assert {r["source"] for r in res.records} == {"natural"}
    assert res.report.skipped == {"invalid_label": 1}


def test_pandalm_majority_ties_and_input(tmp_path: Path) -> None:
    def row(ins: str, inp: str, votes: tuple[int, int, int]) -> dict:
        return {"idx": 0, "instruction": ins, "input": inp, "response1": "R1", "response2": "R2",
                **{f"annotator{k + 1}": v for k, v in enumerate(votes)}}

    rows = [row("I", "", (1, 1, 2)), row("J", "ctx", (2, 2, 0)), row("K", "", (0, 0, 1)),
            row("L", "", (0, 1, 2)), row("M", "", (1, 1, 1)), row("N", "", (2, 5, 2))]
    res = load(tmp_path, rows, "p.json")
    assert res.report.format == "pandalm"
    assert triples(res) == [("I", "R1", "R2"), ("J\nctx", "R2", "R1"), ("M", "R1", "R2")]
    assert res.report.skipped == {"tie": 2, "invalid_label": 1}
    assert res.report.skip_examples == {"tie": [2, 3], "invalid_label": [5]}


def test_judgebench_labels(tmp_path: Path) -> None:
    rows = [{"pair_id": "a", "question": "Q", "response_A": "X", "response_B": "Y", "label": "A>B"},
            {"pair_id": "b", "question": "Q", "response_A": "X", "response_B": "Z", "label": "B>A"},
            {"pair_id": "c", "question": "Q", "response_A": "X", "response_B": "W", "label": "A=B"},
            {"pair_id": "d", "question": "Q", "response_A": "X", "response_B": "V", "label": "A>>B"}]
    res = load(tmp_path, rows)
    assert res.report.format == "judgebench"
    assert triples(res) == [("Q", "X", "Y"), ("Q", "Z", "X")]
    assert res.report.skipped == {"tie": 1, "invalid_label": 1}


def test_autoj_labels_with_tie(tmp_path: Path) -> None:
    # Auto-J's README / pairwise_eval.py: 0 = response 1 better, 1 = response 2 better, 2 = tie.
    rows = [{"scenario": "code", "prompt": "P", "response 1": "X", "response 2": "Y", "label": 0},
            {"scenario": "code", "prompt": "Q", "response 1": "X", "response 2": "Y", "label": 1},
            {"scenario": "code", "prompt": "R", "response 1": "X", "response 2": "Y", "label": 2},
            {"scenario": "code", "prompt": "S", "response 1": "X", "response 2": "Y", "label": 3}]
    res = load(tmp_path, rows)
    assert res.report.format == "autoj"
    assert triples(res) == [("P", "X", "Y"), ("Q", "Y", "X")] and res.records[0]["source"] == "code"
    assert res.report.skipped == {"tie": 1, "invalid_label": 1}
    # Evaluation keeps the tie row (Auto-J's agreement counts it), flagged, answers in file order.
    ev = load(tmp_path, rows, "e.jsonl", mode="eval")
    assert triples(ev) == [("P", "X", "Y"), ("Q", "Y", "X"), ("R", "X", "Y")]
    assert [r["meta"].get("tie", False) for r in ev.records] == [False, False, True]
    assert ev.report.skipped == {"invalid_label": 1} and ev.report.kept == {"tie": 1}


def test_rmbench_rows_give_nine_style_pairs(tmp_path: Path) -> None:
    rows = [{"id": 7, "subset": "alpacaeval", "prompt": "P", "chosen": ["c0", "c1", "c2"],
             "rejected": ["r0", "r1", "r2"]},
            {"id": 8, "prompt": "Q", "chosen": ["c0", "c1"], "rejected": ["r0", "r1", "r2"]}]
    res = load(tmp_path, rows, "chat_filtered.json")
    assert res.report.format == "rmbench" and res.report.skipped == {"missing_field": 1}
    assert (res.report.rows_used, res.report.pairs, len(res.records)) == (1, 9, 9)
    assert [(r["chosen"], r["rejected"]) for r in res.records[:4]] == [("c0", "r0"), ("c0", "r1"), ("c0", "r2"),
                                                                       ("c1", "r0")]
    assert [r["meta"]["cell"] for r in res.records[:4]] == [[0, 0], [0, 1], [0, 2], [1, 0]]
    assert {r["source"] for r in res.records} == {"chat_filtered"}  # the domain comes from the file name
    ev = load(tmp_path, [{**rows[0], "domain": "safety-refuse"}], "total.json", mode="eval")
    assert {r["source"] for r in ev.records} == {"safety-refuse"}
    assert len({r["id"] for r in ev.records}) == 9 and ev.records[1]["id"].endswith("-0.1")


def test_judgebench_tie_is_kept_for_evaluation(tmp_path: Path) -> None:
    rows = [{"pair_id": "c", "question": "Q", "response_A": "X", "response_B": "W", "label": "A=B"}]
    ev = load(tmp_path, rows, mode="eval")
    assert triples(ev) == [("Q", "X", "W")] and ev.records[0]["meta"]["tie"] is True
    assert ev.report.kept == {"tie": 1} and ev.report.skipped == {}


def test_evalbiasbench_dict_of_lists(tmp_path: Path) -> None:
    data = {"length bias": [{"bias": "length bias", "instruction": "I", "response1": "A", "response2": "B",
                             "label": "1"}],
            "concreteness": [{"bias": "concreteness", "instruction": "J", "response1": "A", "response2": "B",
                              "label": "2"}]}
    res = load(tmp_path, data, "bias.json")
    assert res.report.format == "evalbiasbench" and res.report.rows_read == 2
    assert triples(res) == [("I", "A", "B"), ("J", "B", "A")]
    assert [r["source"] for r in res.records] == ["length bias", "concreteness"]


def test_field_mapping(tmp_path: Path) -> None:
    rows = [{"q": "Q", "good": "G", "bad": "B", "hist": [u("H"), a("HA")], "src": "mine"},
            {"q": "Q2", "good": "G2", "bad": "B2"}]
    fm = {"prompt_field": "q", "chosen_field": "good", "rejected_field": "bad", "context_field": "hist",
          "source_field": "src"}
    res = load(tmp_path, rows, field_map=fm)
    assert res.report.format == "fields"
    assert triples(res) == [("Q", "G", "B"), ("Q2", "G2", "B2")]
    assert res.records[0]["context"] == [u("H"), a("HA")] and res.records[0]["source"] == "mine"
    assert res.records[1]["source"] == "data"  # no source field: the file's name
    with pytest.raises(ConjError, match="rejected_field"):
        load_preferences(str(tmp_path / "data.jsonl"),
                         field_map={"prompt_field": "q", "chosen_field": "good"})


# --- skip reasons ----------------------------------------------------------------------------------

OK = {"prompt": "P", "chosen": "C", "rejected": "R"}
SKIP_CASES = {
    "missing_field": ([{"prompt": "P", "chosen": "C"}], {"format": "trl-standard"}),
    "invalid_label": ([{"input": "I", "output_1": "X", "output_2": "Y", "label": "first"}], {}),
    "tie": ([{"prompt": "P", "response 1": "X", "response 2": "Y", "label": 2}], {}),
    "non_text_content": ([{**OK, "chosen": True}], {"format": "trl-standard"}),
    "invalid_text": ([{**OK, "chosen": "a\ud800b"}], {"format": "trl-standard"}),
    "oversized_text": ([{**OK, "chosen": "x" * 1_000_001}], {"format": "trl-standard"}),
    "unknown_role": ([{"chosen": [{"role": "human", "content": "Q"}, a("x")],
                       "rejected": [{"role": "human", "content": "Q"}, a("y")]}], {"format": "skywork"}),
    "empty_question": ([{**OK, "prompt": "  \n"}], {"format": "trl-standard"}),
    "empty_answer": ([{**OK, "rejected": " "}], {"format": "trl-standard"}),
    "identical_answers": ([{**OK, "rejected": "C"}], {"format": "trl-standard"}),
    "duplicate_pair": ([OK], {"format": "trl-standard"}),
    "contaminated": ([{**OK, "prompt": "What is 2+2?", "chosen": "4"}], {"format": "trl-standard"}),
}


@pytest.mark.parametrize("reason", list(SKIP_REASONS))
def test_every_skip_reason(tmp_path: Path, reason: str) -> None:
    bad, kw = SKIP_CASES[reason]
    if reason == "contaminated":
        write(tmp_path / "eval.jsonl", [{"prompt": "what  is 2+2?", "chosen": "x", "rejected": "y"}])
        kw = {**kw, "decontaminate_against": [str(tmp_path / "eval.jsonl")]}
    rows = [OK, *bad] if "format" in kw else bad
    res = load(tmp_path, rows, **kw)
    assert res.report.skipped == {reason: 1}
    assert res.report.skip_examples == {reason: [len(rows) - 1]}


def test_first_reason_wins_when_several_apply(tmp_path: Path) -> None:
    # A tie with an empty answer counts as a tie only; a non-text answer that is also empty-looking
    # counts as non_text_content.
    rows = [{"prompt": "P", "response 1": "", "response 2": "Y", "label": 2},
            {"prompt": "P", "response 1": None, "response 2": "", "label": 1}]
    assert load(tmp_path, rows).report.skipped == {"tie": 1, "non_text_content": 1}


def test_strict_names_row_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [OK, {**OK, "chosen": ""}])
    with pytest.raises(ConjError, match=r"row 1 skipped \(empty_answer"):
        load_preferences(str(path), strict=True)


# --- ids -------------------------------------------------------------------------------------------

def test_ids_stable_under_reordering_and_deletion(tmp_path: Path) -> None:
    rows = [{"prompt": f"P{i}", "chosen": f"C{i}", "rejected": f"R{i}"} for i in range(5)]
    ids = {r["question"]: r["id"] for r in load(tmp_path, rows, "a.jsonl").records}
    shuffled = [rows[3], rows[0], rows[4], rows[1]]
    again = {r["question"]: r["id"] for r in load(tmp_path, shuffled, "b.jsonl").records}
    assert again == {q: ids[q] for q in ("P0", "P1", "P3", "P4")}
    assert len(set(ids.values())) == 5


# --- file types and sources ------------------------------------------------------------------------

ROWS = [{"prompt": "P1", "chosen": "C1", "rejected": "R1"},
        {"prompt": "P2", "chosen": "C2", "rejected": "R2"}]


def _write_any(path: Path) -> None:
    name = path.name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in ROWS) if ".jsonl" in name else json.dumps(ROWS))
    elif name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif name.endswith(".csv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(ROWS[0]))
            writer.writeheader()
            writer.writerows(ROWS)
    else:
        write(path, ROWS)


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.jsonl.gz", "d.json.gz", "d.parquet", "d.csv"])
def test_file_types(tmp_path: Path, name: str) -> None:
    _write_any(tmp_path / name)
    res = load_preferences(str(tmp_path / name))
    assert triples(res) == [("P1", "C1", "R1"), ("P2", "C2", "R2")]
    assert res.records[0]["source"] == "d"


def test_jsonl_content_in_json_file_and_mixed_types(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "chosen": False}) + "\n")
    res = load_preferences(str(path))
    assert triples(res) == [("P1", "C1", "R1")] and res.report.skipped == {"non_text_content": 1}


def test_save_to_disk_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert triples(load_preferences(str(tmp_path / "ds")))[0] == ("P1", "C1", "R1")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                               "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_preferences(str(tmp_path / "dd")).report.rows_read == 2
    assert load_preferences(str(tmp_path / "dd"), split="test").report.rows_read == 1
    datasets.DatasetDict({"a": dd["test"], "b": dd["test"]}).save_to_disk(str(tmp_path / "ab"))
    with pytest.raises(ConjError, match="available: a, b"):
        load_preferences(str(tmp_path / "ab"))


def test_folder_of_files_keeps_file_names_as_source(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    write(tmp_path / "bench" / "natural.json", [{"input": "I", "output_1": "X", "output_2": "Y", "label": 1}])
    write(tmp_path / "bench" / "adversarial-manual.json",
          [{"input": "J", "output_1": "X", "output_2": "Y", "label": 2}])
    res = load_preferences(str(tmp_path / "bench"))
    got = [(r["source"], r["meta"]["row"]) for r in res.records]
    assert got == [("adversarial-manual", 0), ("natural", 1)]


@pytest.mark.parametrize("content", ["not json at all\n", '{"prompt": "P"}\n{broken\n', "\x00\xff garbage"])
def test_junk_files_raise_one_line_conj_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(ConjError) as e:
        load_preferences(str(path))
    assert "junk.jsonl" in str(e.value) and "\n" not in str(e.value)


def test_unknown_and_undetectable_formats(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(ConjError, match="unknown format 'nope'"):
        load_preferences(str(path), format="nope")
    with pytest.raises(ConjError, match="cannot detect the preference format"):
        load_preferences(str(path))


def test_missing_path_and_offline_hub(tmp_path: Path) -> None:
    with pytest.raises(ConjError, match="no such file"):
        load_preferences(str(tmp_path / "absent.jsonl"))
    with pytest.raises(ConjError, match="Hugging Face Hub"):
        load_preferences("nonexistent-org-xyz/nonexistent-dataset-xyz")


def test_write_and_read_records_round_trip(tmp_path: Path) -> None:
    records = load(tmp_path, ROWS).records
    assert write_records(tmp_path / "out.jsonl", records) == 2
    assert read_records(tmp_path / "out.jsonl") == records


# --- decontamination -------------------------------------------------------------------------------

def test_decontamination_exact_and_ngram(tmp_path: Path) -> None:
    write(tmp_path / "eval.jsonl", [{"input": "Write a poem about the sea at night.", "output_1": "x",
                                     "output_2": "y", "label": 1}])
    rows = [{"prompt": "write a  POEM about the sea at night.", "chosen": "C", "rejected": "R"},
            {"prompt": "Please: write a poem about the sea, quickly", "chosen": "C", "rejected": "R"},
            {"prompt": "Write a story about a dog.", "chosen": "C", "rejected": "R"}]
    evals = [str(tmp_path / "eval.jsonl")]
    exact = load(tmp_path, rows, decontaminate_against=evals)
    assert [r["question"] for r in exact.records] == [rows[1]["prompt"], rows[2]["prompt"]]
    assert exact.report.decontaminated == 1 and exact.report.skipped == {"contaminated": 1}
    # "write a poem about the sea" is a 6-word run shared with the eval question; "write a" is not 6.
    ngram = load(tmp_path, rows, "n.jsonl", decontaminate_against=evals, ngram=6)
    assert [r["question"] for r in ngram.records] == [rows[2]["prompt"]]
    assert ngram.report.decontaminated == 2


RB2_ROWS = [
    {"id": "7", "prompt": "q1", "chosen": ["good"], "rejected": ["b1", "b2", "b3"], "num_correct": 1,
     "num_incorrect": 3, "total_completions": 4, "subset": "Focus"},
    {"id": "ref:3", "prompt": "q2", "chosen": ["c1", "c2"], "rejected": ["w1", "w2", "w3"], "num_correct": 2,
     "num_incorrect": 3, "total_completions": 5, "subset": "Ties"},
]


def test_rewardbench2_rows_become_one_pair_per_correct_and_wrong_answer(tmp_path: Path) -> None:
    res = load(tmp_path, RB2_ROWS, mode="eval")
    assert res.report.format == "rewardbench2" and res.report.pairs == 3 + 6
    first = [r for r in res.records if r["meta"]["original_id"] == "7"]
    assert [r["rejected"] for r in first] == ["b1", "b2", "b3"] and {r["chosen"] for r in first} == {"good"}
    assert [r["meta"]["cell"] for r in first] == [[0, 0], [0, 1], [0, 2]]
    ties = [r for r in res.records if r["source"] == "Ties"]
    assert {r["meta"]["row_pairs"] for r in ties} == {6} and ties[-1]["meta"]["cell"] == [1, 2]


def test_rewardbench2_num_correct_must_match_the_chosen_answers(tmp_path: Path) -> None:
    rows = [{**RB2_ROWS[0], "num_correct": 2}]
    assert load(tmp_path, rows).report.skipped == {"invalid_label": 1}


def test_answer_lists_are_refused_rather_than_guessed(tmp_path: Path) -> None:
    # RewardBench 2's shape without num_correct used to read as ultrafeedback: chosen vs the last
    # rejected answer, silently. Detection now refuses with one line naming the formats that read it.
    rows = [{k: v for k, v in RB2_ROWS[0].items() if k != "num_correct"}]
    with pytest.raises(ConjError, match=r"'chosen' holds a list of answers.*--format rewardbench2") as e:
        load(tmp_path, rows)
    assert "\n" not in str(e.value)
    # Named explicitly, a message-list format skips such rows instead of keeping one answer.
    res = load(tmp_path, rows, format="ultrafeedback")
    assert res.report.skipped == {"non_text_content": 1} and not res.records


def test_whole_float_labels_are_labels(tmp_path: Path) -> None:
    # pandas writes an integer column that has a missing value as floats: 1.0 / 2.0 are labels 1 / 2.
    rows = [{"input": "I1", "output_1": "X", "output_2": "Y", "label": 1.0},
            {"input": "I2", "output_1": "X", "output_2": "Y", "label": 2.0},
            {"input": "I3", "output_1": "X", "output_2": "Y", "label": 1.5}]
    res = load(tmp_path, rows, "natural.json")
    assert triples(res) == [("I1", "X", "Y"), ("I2", "Y", "X")]
    assert res.report.skipped == {"invalid_label": 1}


def test_unicode_line_separators_inside_a_json_string_are_text(tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i}\u2028line\u0085next", "chosen": "a\u2029b", "rejected": "c"} for i in range(2)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res = load_preferences(str(path))
    assert [r["chosen"] for r in res.records] == ["a\u2029b"] * 2 and res.report.skipped == {}
