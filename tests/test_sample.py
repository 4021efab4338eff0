"""Stage 1 sampling on the tiny model: counts, seeds, hints, resume after SIGKILL, sharding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conj_train.io import iter_jsonl, read_json
from conj_train.runs import derive_seed, shard_of
from conj_train.sample.run import SampleConfig, run_sample

REPO = Path(__file__).resolve().parents[1]


def _pairs_file(path: Path, n: int) -> Path:
    rows = [{"prompt": f"Question {i}: name a fruit.", "chosen": f"Answer {i}: apple number {i}.",
             "rejected": f"Answer {i}: a hammer, {i} times."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judgments(out: Path) -> list[dict]:
    return [r for p in sorted((out / "judgments").glob("*.jsonl")) for r in iter_jsonl(p)]


def _by_key(rows: list[dict]) -> dict[tuple, str]:
    return {(r["pair_id"], r["kind"], r["index"]): r["text"] for r in rows}


def _cfg(model: Path, data: Path, out: Path, **kw) -> SampleConfig:
    base = {"model_name_or_path": str(model), "dataset_name": str(data), "output_dir": str(out), "n": 3, "hint_samples": 1,
            "max_new_tokens": 8, "progress": False, "batch_pairs": 2, "threads": 1}
    base.update(kw)
    cfg = SampleConfig(**base)
    cfg.validate()
    return cfg


def test_records_per_pair_and_kind(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 5)
    res = run_sample(_cfg(tiny_model_dir, data, tmp_path / "out"))
    rows = _judgments(tmp_path / "out")
    assert len(rows) == 5 * (3 + 1 + 1)
    per_pair = Counter((r["pair_id"], r["kind"]) for r in rows)
    assert set(per_pair.values()) <= {1, 3} and len({p for p, _ in per_pair}) == 5
    assert all(per_pair[(p, "repeated")] == 3 for p, _ in per_pair)
    for r in rows:
        assert r["seed"] == derive_seed(1688, r["pair_id"], r["kind"], r["index"])
        assert r["finish_reason"] in ("stop", "length") and 1 <= r["completion_tokens"] <= 8
        if r["kind"] == "hint_correct":
            assert r["hint_verdict"] == r["label"]
        elif r["kind"] == "hint_wrong":
            assert r["hint_verdict"] == 3 - r["label"]
        else:
            assert r["hint_verdict"] is None
    manifest = read_json(tmp_path / "out" / "manifest.json")
    assert manifest["complete"] and manifest["counts"]["judgments"] == 25
    assert manifest["counts"]["by_kind"] == {"repeated": 15, "hint_correct": 5, "hint_wrong": 5}
    assert res.merged and "judgments written: 25" in res.summary
    prompts = list(iter_jsonl(tmp_path / "out" / "prompts" / "shard-00000-of-00001.jsonl"))
    assert {p["pair_id"] for p in prompts} == {r["pair_id"] for r in rows}
    # The DPO prompt turns the filter writes into preference rows: here no system prompt.
    assert all(p["messages"] == [{"role": "user", "content": p["prompt"]}] for p in prompts)


def test_prompt_records_carry_the_system_turn(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 1)
    run_sample(_cfg(tiny_model_dir, data, tmp_path / "out", n=1, hint_samples=0, system_prompt="Be fair."))
    (prompt,) = iter_jsonl(tmp_path / "out" / "prompts" / "shard-00000-of-00001.jsonl")
    assert prompt["messages"] == [{"role": "system", "content": "Be fair."},
                                  {"role": "user", "content": prompt["prompt"]}]


def test_code_reading_wraps_output_with_hinted_verdict(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.verdicts import parse_verdict

    data = _pairs_file(tmp_path / "pairs.jsonl", 2)
    run_sample(_cfg(tiny_model_dir, data, tmp_path / "out", n=0, hint_samples=2, hint_reading="code"))
    rows = _judgments(tmp_path / "out")
    assert len(rows) == 2 * 4
    for r in rows:
        assert r["text"].startswith('{"原因":"' + r["raw_text"])
        assert parse_verdict(r["text"], "strict").verdict == r["hint_verdict"]


def test_rerun_is_noop_and_changed_config_refuses(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.errors import ConjError

    data = _pairs_file(tmp_path / "pairs.jsonl", 2)
    out = tmp_path / "out"
    run_sample(_cfg(tiny_model_dir, data, out))
    before = (out / "judgments" / "shard-00000-of-00001.jsonl").read_bytes()
    again = run_sample(_cfg(tiny_model_dir, data, out, batch_pairs=1))  # runtime-only change
    assert "already complete" in again.summary
    assert (out / "judgments" / "shard-00000-of-00001.jsonl").read_bytes() == before
    with pytest.raises(ConjError, match="different config"):
        run_sample(_cfg(tiny_model_dir, data, out, temperature=0.7))
    run_sample(_cfg(tiny_model_dir, data, out, temperature=0.7, overwrite=True))
    assert read_json(out / "manifest.json")["config"]["temperature"] == 0.7


def test_fallback_hints_only_for_one_sided_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.verdicts import parse_verdict

    data = _pairs_file(tmp_path / "pairs.jsonl", 6)
    run_sample(_cfg(tiny_model_dir, data, tmp_path / "out", hint_when="fallback", n=2))
    rows = _judgments(tmp_path / "out")
    repeated: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "repeated":
            repeated.setdefault(r["pair_id"], []).append(r)
    one_sided = set()
    for pid, rs in repeated.items():
        v = [parse_verdict(r["text"], "strict").verdict for r in rs]
        right = sum(x == r["label"] for x, r in zip(v, rs, strict=True))
        wrong = sum(x is not None and x != r["label"] for x, r in zip(v, rs, strict=True))
        if right == 0 or wrong == 0:
            one_sided.add(pid)
    hinted = {r["pair_id"] for r in rows if r["kind"] != "repeated"}
    assert hinted == one_sided
    assert read_json(tmp_path / "out" / "manifest.json")["counts"]["fallback_pairs"] == len(one_sided)


def test_over_long_prompts_are_skipped_and_counted(tmp_path: Path) -> None:
    from conj_train.model_builders.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "short", max_positions=160)
    rows = [{"prompt": "Name a fruit.", "chosen": "apple", "rejected": "hammer"},
            {"prompt": "Name a fruit. " * 60, "chosen": "pear", "rejected": "horse"}]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_sample(_cfg(model, data, tmp_path / "out", n=1, hint_samples=0))
    counts = read_json(tmp_path / "out" / "manifest.json")["counts"]
    assert counts["judgments"] == 1
    assert counts["skipped_prompts"] == {"prompt_too_long": 1}


def _write_recipe(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO)
    return env


def test_kill_and_resume_equals_uninterrupted(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 24)
    common = {"model_name_or_path": str(tiny_model_dir), "dataset_name": str(data), "n": 2, "hint_samples": 1,
              "max_new_tokens": 24, "batch_pairs": 1, "threads": 1, "progress": False}
    killed = tmp_path / "killed"
    recipe = _write_recipe(tmp_path / "r1.yaml", output_dir=str(killed), **common)
    cmd = [sys.executable, "-m", "conj_train", "sample", "--config", str(recipe)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = killed / "judgments" / "shard-00000-of-00001.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if shard.exists() and shard.stat().st_size > 0 and len(shard.read_bytes().splitlines()) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list(iter_jsonl(shard, drop_partial_last_line=True)))
    assert 0 < partial < 24 * 4
    assert not (killed / "manifest.json").exists()
    # Simulate a write cut mid-line, as a crash inside write() would leave.
    with open(shard, "a") as f:
        f.write('{"pair_id": "half')
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    whole = tmp_path / "whole"
    recipe2 = _write_recipe(tmp_path / "r2.yaml", output_dir=str(whole), **common)
    ok = subprocess.run([sys.executable, "-m", "conj_train", "sample", "--config", str(recipe2)],
                        env=_env(), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    a, b = _judgments(killed), _judgments(whole)
    assert len(a) == len(b) == 24 * 4
    assert _by_key(a) == _by_key(b)


def test_two_processes_merge_to_single_process_records(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 10)
    common = {"model_name_or_path": str(tiny_model_dir), "dataset_name": str(data), "n": 2, "hint_samples": 1,
              "max_new_tokens": 8, "progress": False}
    single = tmp_path / "single"
    run_sample(SampleConfig(output_dir=str(single), threads=1, **common))
    multi = tmp_path / "multi"
    recipe = _write_recipe(tmp_path / "r.yaml", output_dir=str(multi), **common)
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         str(REPO / "scripts" / "sample.py"), "--config", str(recipe)],
        env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted((multi / "judgments").glob("*.jsonl"))
    assert [p.name for p in shards] == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
    for i, p in enumerate(shards):
        assert all(shard_of(r["pair_id"], 2) == i for r in iter_jsonl(p))
    assert read_json(multi / "manifest.json")["shards"] == 2
    assert _by_key(_judgments(multi)) == _by_key(_judgments(single))


def test_shard_flag_then_merge_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.errors import ConjError

    data = _pairs_file(tmp_path / "pairs.jsonl", 6)
    out = tmp_path / "out"
    run_sample(_cfg(tiny_model_dir, data, out, shard="1/2"))
    assert not (out / "manifest.json").exists()
    with pytest.raises(ConjError, match="not finished"):
        run_sample(_cfg(tiny_model_dir, data, out, merge_only=True))
    run_sample(_cfg(tiny_model_dir, data, out, shard="0/2"))
    res = run_sample(_cfg(tiny_model_dir, data, out, merge_only=True))
    assert res.counts["judgments"] == 6 * 5


@pytest.mark.parametrize(("extra", "needle"), [
    (["--nn", "3"], "unknown key 'nn'"),
    (["--model", "/nonexistent/model"], "model path not found"),
    (["--hint_reading", "both"], "hint_reading"),
])
def test_cli_errors_are_one_line_exit_2(tiny_model_dir: Path, tmp_path: Path, extra: list[str],
                                        needle: str) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 2)
    recipe = _write_recipe(tmp_path / "r.yaml", model_name_or_path=str(tiny_model_dir), dataset_name=str(data),
                           output_dir=str(tmp_path / "o"), progress=False)
    proc = subprocess.run([sys.executable, "-m", "conj_train", "sample", "--config", str(recipe), *extra],
                          env=_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_tokenizer_without_chat_template_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from conj_train.errors import ConjError

    model = tmp_path / "nochat"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").unlink()
    data = _pairs_file(tmp_path / "pairs.jsonl", 1)
    with pytest.raises(ConjError, match="no chat template"):
        run_sample(_cfg(model, data, tmp_path / "out"))


def test_packed_hf_engine_samples_every_record_and_is_part_of_the_config(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 6)
    common = {"model_name_or_path": str(tiny_model_dir), "dataset_name": str(data), "n": 3, "hint_samples": 1,
              "max_new_tokens": 8, "progress": False, "threads": 1}
    run_sample(SampleConfig(output_dir=str(tmp_path / "one"), **common))
    run_sample(SampleConfig(output_dir=str(tmp_path / "packed"), hf_batch_tokens=100_000, **common))
    one, packed = _judgments(tmp_path / "one"), _judgments(tmp_path / "packed")
    assert len(one) == len(packed) == 6 * 5
    assert set(_by_key(one)) == set(_by_key(packed))
    configs = [read_json(tmp_path / d / "manifest.json")["config"] for d in ("one", "packed")]
    assert (configs[0]["hf_batch_tokens"], configs[1]["hf_batch_tokens"]) == (0, 100_000)


def test_prefill_starts_every_prompted_judgment_and_parse_rates_per_kind(tiny_model_dir: Path,
                                                                        tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 3)
    prefill = '{"原因": "'
    res = run_sample(_cfg(tiny_model_dir, data, tmp_path / "out", n=2, prefill=prefill))
    rows = _judgments(tmp_path / "out")
    assert len(rows) == 3 * 4 and all(r["text"].startswith(prefill) for r in rows)
    plain = run_sample(_cfg(tiny_model_dir, data, tmp_path / "plain", n=2))
    assert not any(r["text"].startswith(prefill) for r in _judgments(tmp_path / "plain"))
    # The prefill is model input: it is counted with the prompt's tokens.
    assert {r["prompt_tokens"] for r in rows} != {r["prompt_tokens"] for r in _judgments(tmp_path / "plain")}
    counts = read_json(tmp_path / "out" / "manifest.json")["counts"]
    assert set(counts["share_parseable_by_kind"]) == {"repeated", "hint_correct", "hint_wrong"}
    assert sum(counts["parseable_by_kind"].values()) == counts["parseable"]
    # None = the template's evaluation prefill; the prefill is part of the config hash.
    run_sample(_cfg(tiny_model_dir, data, tmp_path / "tpl", n=1, hint_samples=0, prefill=None))
    assert all(r["text"].startswith(' {"原因":') for r in _judgments(tmp_path / "tpl"))
    assert _cfg(tiny_model_dir, data, tmp_path, prefill=prefill).output_hash() != \
        _cfg(tiny_model_dir, data, tmp_path).output_hash()
    assert res.counts["judgments"] == plain.counts["judgments"]


def test_code_reading_hint_outputs_get_no_prefill(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs_file(tmp_path / "pairs.jsonl", 2)
    run_sample(_cfg(tiny_model_dir, data, tmp_path / "out", n=1, hint_reading="code", prefill="Because"))
    for r in _judgments(tmp_path / "out"):
        if r["kind"] == "repeated":
            assert r["text"].startswith("Because")
        else:  # free text wrapped into JSON afterwards
            assert r["text"].startswith('{"原因":"' + r["raw_text"]) and not r["raw_text"].startswith("Because")


def test_low_parse_rate_warns_per_kind() -> None:
    from conj_train.sample.summary import format_summary, parse_warning

    counts = {"judgments": 10, "pairs": 2, "share_parseable": 0.8,
              "share_parseable_by_kind": {"repeated": 0.9, "hint_correct": 0.2}}
    warning = parse_warning(counts, 0.5)
    assert warning is not None and "hint_correct 20%" in warning and "repeated" not in warning
    assert format_summary(counts, 0.5).startswith("WARNING: few parseable")
    assert parse_warning(counts, 0.1) is None and "WARNING" not in format_summary(counts, 0.1)
    assert "all 80%" in (parse_warning({**counts, "share_parseable_by_kind": {}}, 0.85) or "")
