"""`conj run`: stages chain, a rerun is cached, a change redoes exactly the stages it affects."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conj_train.errors import ConjError
from conj_train.io import read_json
from conj_train.pipeline.run import run_pipeline


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_cache_and_invalidation(tiny_pipeline, tmp_path: Path) -> None:
    recipe = tiny_pipeline(tmp_path)
    first = run_pipeline(recipe)
    assert _statuses(first) == dict.fromkeys(("sample", "filter", "train", "eval"), "ran")
    out = tmp_path / "run"
    assert (out / "train" / "model.safetensors").exists()
    metrics = read_json(out / "eval" / "metrics.json")
    # conj run writes the evaluation into the trained judge's card as model-index entries.
    from huggingface_hub import ModelCard

    results = ModelCard.load(out / "train" / "README.md").data.eval_results
    accuracy = metrics["models"]["conj"]["datasets"]["pairs"]["overall"]["accuracy"]
    assert [(r.dataset_name, r.metric_value) for r in results if "one random" in r.metric_name] == [
        ("pairs", accuracy)]

    again = run_pipeline(recipe)
    assert set(_statuses(again).values()) == {"cached"}
    assert read_json(out / "eval" / "metrics.json") == metrics

    # An eval option only reruns eval.
    after_eval = run_pipeline(recipe, overrides={"eval.max_pairs": 2})
    assert _statuses(after_eval) == {"sample": "cached", "filter": "cached", "train": "cached", "eval": "ran"}

    # A sampling option reruns sampling and everything after it.
    after_sample = run_pipeline(recipe, overrides={"eval.max_pairs": 2, "sample.temperature": 0.9})
    assert set(_statuses(after_sample).values()) == {"ran"}
    assert read_json(out / "sample" / "manifest.json")["config"]["temperature"] == 0.9


def test_a_changed_judge_keeps_the_base_judges_evaluation(tiny_pipeline, tmp_path: Path) -> None:
    recipe = tiny_pipeline(tmp_path)
    run_pipeline(recipe)
    models = tmp_path / "run" / "eval" / "models"
    base_records = models / "base" / "judgments" / "shard-00000-of-00001.jsonl"
    conj_records = models / "conj" / "judgments" / "shard-00000-of-00001.jsonl"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (base_records, conj_records)}
    base_metrics = read_json(tmp_path / "run" / "eval" / "metrics.json")["models"]["base"]

    changed = run_pipeline(recipe, overrides={"train.learning_rate": 5e-4})
    assert _statuses(changed)["train"] == "ran" and _statuses(changed)["eval"] == "ran"
    assert "kept: models/base" in next(s.why for s in changed.stages if s.name == "eval")
    # The base judge did not change: its records are the same file, untouched; the new judge's are new.
    assert (base_records.stat().st_ino, base_records.stat().st_mtime_ns) == before[base_records]
    assert (conj_records.stat().st_ino, conj_records.stat().st_mtime_ns) != before[conj_records]
    assert read_json(tmp_path / "run" / "eval" / "metrics.json")["models"]["base"] == base_metrics

    # An evaluation setting changes every model's records: nothing is kept.
    again = run_pipeline(recipe, overrides={"train.learning_rate": 5e-4, "eval.max_pairs": 2})
    assert "kept" not in next(s.why for s in again.stages if s.name == "eval")
    assert base_records.stat().st_mtime_ns != before[base_records][1]


def test_from_and_until(tiny_pipeline, tmp_path: Path) -> None:
    recipe = tiny_pipeline(tmp_path)
    partial = run_pipeline(recipe, until="filter")
    assert list(_statuses(partial)) == ["sample", "filter"]
    assert not (tmp_path / "run" / "train").exists()
    redo = run_pipeline(recipe, from_stage="filter", until="filter")
    assert _statuses(redo) == {"sample": "cached", "filter": "ran"}


def test_two_rounds_sample_with_the_previous_judge(tiny_pipeline, tmp_path: Path) -> None:
    recipe = tiny_pipeline(tmp_path)
    spec = yaml.safe_load(recipe.read_text())
    spec["rounds"] = 2
    recipe.write_text(yaml.safe_dump(spec))
    result = run_pipeline(recipe)
    out = tmp_path / "run"
    assert [s.name for s in result.stages] == [f"{st}[round {r}]" for r in (1, 2)
                                               for st in ("sample", "filter", "train", "eval")]
    round2 = read_json(out / "round-2" / "sample" / "manifest.json")["config"]
    assert round2["model_name_or_path"] == str(out / "round-1" / "train")
    assert (out / "round-2" / "eval" / "metrics.json").exists()


@pytest.mark.parametrize(("change", "needle"), [
    ({"bogus": 1}, "unknown pipeline key 'bogus'"),
    ({"rounds": 0}, "rounds must be >= 1"),
    ({"dataset_name": ""}, "'dataset_name' is required"),
    ({"eval": {"push_to_hub": True, "hub_repo_id": "me/results"}}, "eval: push_to_hub needs a Hub token"),  # before any stage
])
def test_bad_recipes_are_one_line_errors(tiny_pipeline, tmp_path: Path, change: dict,
                                         needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    recipe = tiny_pipeline(tmp_path)
    spec = {**yaml.safe_load(recipe.read_text()), **change}
    recipe.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConjError, match=needle):
        run_pipeline(recipe)
    assert not (tmp_path / "run" / "sample").exists()  # refused before any stage ran


def test_killed_pipeline_resumes_to_the_metrics_of_an_uninterrupted_run(tiny_pipeline, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    train = {"train__max_steps": 30, "train__save_strategy": "steps", "train__save_steps": 4,
             "train__per_device_train_batch_size": 1}
    for name in ("killed", "whole"):
        (tmp_path / name).mkdir()
    killed_recipe = tiny_pipeline(tmp_path / "killed", **train)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "conj_train", "run", "--config", str(killed_recipe)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train_dir = tmp_path / "killed" / "run" / "train"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(train_dir.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed in training"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (train_dir / "manifest.json").exists()

    resumed = run_pipeline(killed_recipe)
    statuses = _statuses(resumed)
    assert statuses["sample"] == statuses["filter"] == "cached" and statuses["train"] == "resumed"
    assert "checkpoint-" in str(read_json(train_dir / "report.json")["resumed_from"])

    whole = run_pipeline(tiny_pipeline(tmp_path / "whole", **train))
    assert set(_statuses(whole).values()) == {"ran"}
    a = read_json(tmp_path / "killed" / "run" / "eval" / "metrics.json")["comparison"]
    b = read_json(tmp_path / "whole" / "run" / "eval" / "metrics.json")["comparison"]
    assert a == b


def test_stages_started_with_accelerate_launch_match_one_process(tiny_pipeline, tmp_path: Path) -> None:
    two = {"multi_gpu": True, "num_processes": 2}
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    one = run_pipeline(tiny_pipeline(tmp_path / "one"))
    recipe = tiny_pipeline(tmp_path / "two")
    spec = yaml.safe_load(recipe.read_text())
    spec["launch"] = {"sample": two, "eval": two}
    recipe.write_text(yaml.safe_dump(spec))
    launched = run_pipeline(recipe)
    assert set(_statuses(one).values()) == set(_statuses(launched).values()) == {"ran"}
    run = tmp_path / "two" / "run"
    assert read_json(run / "sample" / "manifest.json")["shards"] == 2
    a = read_json(tmp_path / "one" / "run" / "eval" / "metrics.json")["comparison"]
    assert read_json(run / "eval" / "metrics.json")["comparison"] == a
    # How a stage is launched is not part of its cache key.
    spec.pop("launch")
    recipe.write_text(yaml.safe_dump(spec))
    assert set(_statuses(run_pipeline(recipe)).values()) == {"cached"}


def test_a_launched_stage_gets_its_hub_token_by_environment_not_file(tmp_path: Path) -> None:
    from conj_train.pipeline.stages import secrets_env, write_stage_recipe

    cfg = {"learning_rate": 1e-3, "hub_token": "hf_SECRETsecret123", "pad_token": "<pad>"}
    recipe = write_stage_recipe(cfg, tmp_path / "run" / "train")
    text = recipe.read_text()
    assert "hf_SECRET" not in text and "hub_token" not in text and "pad_token" in text
    assert secrets_env(cfg) == {"HF_TOKEN": "hf_SECRETsecret123"}
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "hf_SECRET" in p.read_text()]
    with pytest.raises(ConjError, match="environment"):
        secrets_env({"wandb_api_key": "k"})


def test_a_launched_stages_refusal_is_its_one_line_without_the_launchers_report(
    tiny_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Two launched processes refuse a folder that a 1-process run is writing: the user sees the
    stage's refusal once, not torch elastic's failure report around it."""
    import fcntl
    import json

    from conj_train.pipeline.stages import launch_stage, write_stage_recipe
    from conj_train.runs import LOCKS

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "yes", "rejected": "no"}) + "\n"
                            for i in range(4)))
    out = tmp_path / "s"
    recipe = write_stage_recipe({"model_name_or_path": str(tiny_model_dir), "dataset_name": str(data), "n": 1,
                                 "max_new_tokens": 2, "hint_samples": 0, "threads": 1, "progress": False}, out)
    (out / LOCKS).mkdir(parents=True)
    with open(out / LOCKS / "count-1.lock", "a+") as running:  # a 1-shard run is writing there
        fcntl.flock(running.fileno(), fcntl.LOCK_EX)
        capfd.readouterr()
        with pytest.raises(ConjError, match="a run with 1 shards is writing here") as refused:
            launch_stage("sample", recipe, {"multi_gpu": True, "num_processes": 2})
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ChildFailedError" not in err and ": error: " not in err, err
    assert str(refused.value).startswith(f"{out}: a run with 1 shards is writing here")


def test_a_progress_bar_reaches_the_terminal_before_its_newline(tmp_path: Path) -> None:
    import io
    import os
    import threading
    import time

    from conj_train.pipeline.stages import forward_until_stage_error

    read, write = os.pipe()
    sink = io.StringIO()
    found: list[list[str]] = []
    reader = threading.Thread(target=lambda: found.append(forward_until_stage_error(read, sink)))
    reader.start()
    os.write(write, "log line\n\rsample: 50%|█".encode() + b"\xe2\x96")  # a bar, cut inside a character
    deadline = time.monotonic() + 30
    while "50%|█" not in sink.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    # Shown while the launcher is still running, before the line's newline: the half character held back.
    assert sink.getvalue() == "log line\n\rsample: 50%|█"
    os.write(write, b"\x88\rsample: 100%\nconj sample: error: stop\nTraceback: launcher noise\n")
    os.close(write)
    reader.join(timeout=30)
    os.close(read)
    assert found == [["conj sample: error: stop"]]
    assert sink.getvalue() == "log line\n\rsample: 50%|██\rsample: 100%\n"
