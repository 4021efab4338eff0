"""``conj data`` through a real subprocess: JSON report, exit codes, one-line errors, fast --help."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "trl", "datasets", "peft", "deepspeed")
ROWS = [{"prompt": "P1", "chosen": "C1", "rejected": "R1"},
        {"prompt": "P2", "chosen": "C2", "rejected": "C2"},
        {"prompt": "P3", "chosen": "a longer chosen answer", "rejected": "R3"}]


def conj(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conj_train", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def test_check_json_report(data_file: Path) -> None:
    proc = conj("data", "check", str(data_file), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert (info["rows_read"], info["rows_used"], info["format"]) == (3, 2, "trl-standard")
    assert info["skipped"] == {"identical_answers": 1}
    assert info["lengths"]["chars"]["chosen"] == {"p50": 2, "p90": 22, "p99": 22, "max": 22}
    assert "tokens" not in info["lengths"]


def test_check_human_report(data_file: Path) -> None:
    proc = conj("data", "check", str(data_file))
    assert proc.returncode == 0, proc.stderr
    assert "rows used:   2" in proc.stdout and "identical_answers" in proc.stdout


def test_check_token_lengths_with_tokenizer(data_file: Path, tiny_model_dir: Path) -> None:
    proc = conj("data", "check", str(data_file), "--tokenizer", str(tiny_model_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    tokens = json.loads(proc.stdout)["lengths"]["tokens"]
    assert set(tokens) == {"question", "chosen", "rejected"}
    assert 0 < tokens["chosen"]["max"] <= len("a longer chosen answer")


def test_check_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "custom.jsonl"
    path.write_text(json.dumps({"q": "Q", "good": "G", "bad": "B"}) + "\n", encoding="utf-8")
    proc = conj("data", "check", str(path), "--field", "prompt_field=q", "--field", "chosen_field=good",
                "--field", "rejected_field=bad", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "fields"


def test_convert_writes_records_and_decontaminates(tmp_path: Path, data_file: Path) -> None:
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"prompt": "p3", "chosen": "x", "rejected": "y"}) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "records.jsonl"
    proc = conj("data", "convert", str(data_file), "--output", str(out), "--decontaminate", str(evals),
                "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["skipped"] == {"identical_answers": 1, "contaminated": 1} and info["written"] == 1
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["question"], r["chosen"]) for r in records] == [("P1", "C1")]


def test_junk_lines_exit_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_text("this is not json\n{neither is this\n", encoding="utf-8")
    proc = conj("data", "check", str(path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "junk.jsonl" in proc.stderr
    assert proc.stdout == ""


def test_unknown_format_exit_2(data_file: Path) -> None:
    proc = conj("data", "check", str(data_file), "--format", "nope", "--json")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "unknown format 'nope'" in proc.stderr


def test_strict_exit_2_names_row(data_file: Path) -> None:
    proc = conj("data", "check", str(data_file), "--strict")
    assert proc.returncode == 2 and "row 1" in proc.stderr and "identical_answers" in proc.stderr


@pytest.mark.parametrize("args", [("--help",), ("data", "--help"), ("data", "check", "--help")])
def test_help_is_fast_and_light(args: tuple[str, ...]) -> None:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "conj_train", *args],
                          capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and "usage: conj" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & set(HEAVY), imported & set(HEAVY)
    assert elapsed < 1.5, f"{' '.join(args)} took {elapsed:.2f} s"


def test_check_eval_mode_shows_what_conj_eval_scores(tmp_path: Path) -> None:
    # Auto-J rows: a tie (label 2), a repeated row and identical answers. Training ingestion keeps 1 row;
    # `conj eval` scores all 4, and the eval mode of `conj data check` says so.
    rows = [{"scenario": "chitchat", "prompt": "Hi", "response 1": "Hello.", "response 2": "Go away.", "label": 0},
            {"scenario": "chitchat", "prompt": "Hey", "response 1": "Hi.", "response 2": "Yo.", "label": 2},
            {"scenario": "chitchat", "prompt": "Hi", "response 1": "Hello.", "response 2": "Go away.", "label": 0},
            {"scenario": "chitchat", "prompt": "Yo", "response 1": "Yo.", "response 2": "Yo.", "label": 0}]
    path = tmp_path / "autoj.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train = json.loads(conj("data", "check", str(path), "--json").stdout)
    assert (train["rows_used"], train["pairs"]) == (1, 1)
    proc = conj("data", "check", str(path), "--mode", "eval", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["mode"], info["rows_used"], info["pairs"], info["benchmark"]) == ("eval", 4, 4, "Auto-J pairwise")
    assert info["kept"] == {"tie": 1, "duplicate_pair": 1, "identical_answers": 1}
    text = conj("data", "check", str(path), "--mode", "eval").stdout
    assert "pairs:       4 (1 tie-labelled)" in text and "benchmark: Auto-J pairwise" in text
