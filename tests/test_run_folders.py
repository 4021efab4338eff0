"""A run folder holds one config and one version of the data; one run writes a shard at a time.

Real tiny model throughout; an interruption is a real engine that stops after its first batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conj_train.cli import main
from conj_train.errors import ConjError
from conj_train.io import iter_jsonl, read_json
from conj_train.runs import shard_lock
from conj_train.sample.run import SampleConfig, run_sample


def _pairs(path: Path, n: int, word: str = "apple") -> Path:
    rows = [{"prompt": f"Question {i}: name a fruit.", "chosen": f"{word} {i}.", "rejected": f"hammer {i}."}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model: Path, data: Path, out: Path, **kw: object) -> SampleConfig:
    base = {"model_name_or_path": str(model), "dataset_name": str(data), "output_dir": str(out), "n": 2, "hint_samples": 0,
            "max_new_tokens": 4, "progress": False, "batch_pairs": 1, "threads": 1}
    return SampleConfig(**{**base, **kw})


def _records(out: Path) -> list[dict]:
    return [r for p in sorted((out / "judgments").glob("*.jsonl")) for r in iter_jsonl(p)]


class _Stop(Exception):
    pass


def _engine_that_stops(model: Path, after: int):
    """The real HF engine, stopping the run (as a kill would) after ``after`` generate calls."""
    from conj_train.engines.hf import HFEngine

    class Stopping(HFEngine):
        calls = 0

        def generate(self, *a, **k):
            if Stopping.calls >= after:
                raise _Stop
            Stopping.calls += 1
            return super().generate(*a, **k)

    return Stopping(str(model), threads=1)


def test_interrupted_sample_refuses_another_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, out = _pairs(tmp_path / "d.jsonl", 4), tmp_path / "s"
    with pytest.raises(_Stop):
        run_sample(_cfg(tiny_model_dir, data, out, temperature=1.2), engine=_engine_that_stops(tiny_model_dir, 1))
    assert 0 < len(_records(out)) < 8
    with pytest.raises(ConjError, match="different config"):
        run_sample(_cfg(tiny_model_dir, data, out, temperature=0.5))
    # --overwrite starts over: every record is of the new config (none of the first run's are left).
    res = run_sample(_cfg(tiny_model_dir, data, out, temperature=0.5, overwrite=True))
    assert res.merged and len(_records(out)) == 8
    assert read_json(out / "manifest.json")["config"]["temperature"] == 0.5
    # The same config resumes an interrupted run (kill -9 resume is in test_sample.py).
    with pytest.raises(_Stop):
        run_sample(_cfg(tiny_model_dir, data, tmp_path / "s2"), engine=_engine_that_stops(tiny_model_dir, 1))
    assert run_sample(_cfg(tiny_model_dir, data, tmp_path / "s2")).merged
    assert len(_records(tmp_path / "s2")) == 8


def test_changed_data_content_is_refused_not_resumed(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, out = _pairs(tmp_path / "d.jsonl", 3), tmp_path / "s"
    run_sample(_cfg(tiny_model_dir, data, out))
    _pairs(data, 3, word="pear")  # same path, other rows
    with pytest.raises(ConjError, match="other input data"):
        run_sample(_cfg(tiny_model_dir, data, out))


def test_eval_on_changed_data_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data, out = _pairs(tmp_path / "d.jsonl", 2), tmp_path / "e"
    argv = ["eval", "--model", str(tiny_model_dir), "--dataset", str(data), "--output", str(out),
            "--max_new_tokens", "4", "--progress", "false", "--probability", "false", "--threads", "1"]
    assert main(argv) == 0
    _pairs(data, 2, word="pear")
    capsys.readouterr()
    assert main(argv) == 2
    assert "other input data" in capsys.readouterr().err


def test_pipeline_redoes_sample_when_the_data_rows_change(tiny_pipeline, tmp_path: Path) -> None:
    from conj_train.pipeline.run import run_pipeline

    recipe = tiny_pipeline(tmp_path)
    first = run_pipeline(recipe, until="sample")
    assert [s.status for s in first.stages] == ["ran"]
    assert [s.status for s in run_pipeline(recipe, until="sample").stages] == ["cached"]
    _pairs(tmp_path / "pairs.jsonl", 8, word="plum")  # the recipe's dataset, rewritten in place
    again = run_pipeline(recipe, until="sample")
    assert [(s.status, s.why) for s in again.stages] == [("ran", "config or an input changed")]


def test_second_run_into_a_shard_being_written_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    data, out = _pairs(tmp_path / "d.jsonl", 2), tmp_path / "s"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model_name_or_path": str(tiny_model_dir), "dataset_name": str(data), "output_dir": str(out),
                                  "n": 1, "hint_samples": 0, "max_new_tokens": 4, "progress": False}))
    with shard_lock(out, "shard-00000-of-00001"):  # the first run, still writing
        capsys.readouterr()
        assert main(["sample", "--config", str(recipe)]) == 2
        assert "another run is writing" in capsys.readouterr().err
    assert not (out / "judgments").exists() or not _records(out)
    assert main(["sample", "--config", str(recipe)]) == 0  # the lock died with its holder


@pytest.mark.parametrize("damage", ["torn_last_line", "emptied"])
def test_filter_checks_judgments_against_the_sample_manifest(tiny_model_dir: Path, tmp_path: Path,
                                                             damage: str) -> None:
    from conj_train.filter.run import FilterConfig, run_filter

    out = tmp_path / "s"
    run_sample(_cfg(tiny_model_dir, _pairs(tmp_path / "d.jsonl", 3), out))
    shard = out / "judgments" / "shard-00000-of-00001.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:-1]) + lines[-1][:10] if damage == "torn_last_line" else "")
    with pytest.raises(ConjError, match="judgments on disk but the sampling manifest lists 6"):
        run_filter(FilterConfig(dataset_name=str(out), output_dir=str(tmp_path / "f")))


# --- --overwrite removes only what the stage wrote ------------------------------------------------


def test_sample_overwrite_keeps_files_it_did_not_write(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, out = _pairs(tmp_path / "d.jsonl", 3), tmp_path / "u"
    mine = {out / "mydata" / "pairs.jsonl": "user data\n", out / "notes.txt": "x",
            out / "judgments" / "my-notes.jsonl": "{}\n", out / "prompts" / "keep.txt": "y"}
    for path, text in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    run_sample(_cfg(tiny_model_dir, data, out))
    run_sample(_cfg(tiny_model_dir, data, out, n=1, overwrite=True))
    assert {p: p.read_text() for p in mine} == mine
    assert len([r for r in _records(out) if "pair_id" in r]) == 3  # only the new config's records


def test_train_overwrite_keeps_files_it_did_not_write(tiny_model_dir: Path, tmp_path: Path) -> None:
    from test_train import train_argv, write_pairs

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    data, out = write_pairs(tmp_path / "filter", 8, 0), tmp_path / "t"
    out.mkdir()
    (out / "before.txt").write_text("mine")
    run_train(*parse_train_args(train_argv(tiny_model_dir, data, out, max_steps=2, save_steps=1)))
    (out / "my-eval").mkdir()
    (out / "my-eval" / "after.txt").write_text("mine too")
    assert (out / "checkpoint-1").is_dir()
    run_train(*parse_train_args(train_argv(tiny_model_dir, data, out, max_steps=1, learning_rate=5e-3,
                                           save_strategy="no", overwrite=True)))
    assert (out / "before.txt").read_text() == "mine" and (out / "my-eval" / "after.txt").read_text() == "mine too"
    assert not (out / "checkpoint-1").exists() and (out / "model.safetensors").is_file()


# --- training keys its resume on the pairs' content ----------------------------------------------


def test_train_refuses_to_resume_on_changed_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from test_train import train_argv, write_pairs
    from transformers import TrainerCallback

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            control.should_training_stop = state.global_step == 1

    data, out = write_pairs(tmp_path / "filter", 8, 0), tmp_path / "t"
    argv = train_argv(tiny_model_dir, data, out, max_steps=2, save_steps=1)
    run_train(*parse_train_args(argv), callbacks=[StopAt()])
    assert (out / "checkpoint-1").is_dir()
    shutil.rmtree(data / "dataset")
    write_pairs(data, 12, 0)  # same folder, other pairs
    with pytest.raises(ConjError, match="other training pairs"):
        run_train(*parse_train_args(argv))
    fresh = run_train(*parse_train_args([*argv, "--overwrite", "true"]))
    assert fresh.resumed_from is None and fresh.counts["train"].read == 12


def test_resume_from_the_last_checkpoint_takes_no_step_past_max_steps(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Killed right after the final checkpoint: the rerun saves that checkpoint's weights, at max_steps."""
    from safetensors.torch import load_file
    from test_train import train_argv, write_pairs

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    data, out = write_pairs(tmp_path / "filter", 32, 0), tmp_path / "t"  # 8 steps an epoch: max_steps ends mid-epoch
    argv = train_argv(tiny_model_dir, data, out, max_steps=2, save_steps=2, lr_scheduler_type="constant")
    run_train(*parse_train_args(argv))
    for name in ("manifest.json", "model.safetensors", "trainer_state.json"):  # as if killed before the final save
        (out / name).unlink()
    resumed = run_train(*parse_train_args(argv))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert read_json(out / "trainer_state.json")["global_step"] == 2
    final, ckpt = load_file(out / "model.safetensors"), load_file(out / "checkpoint-2" / "model.safetensors")
    assert all((final[k] == ckpt[k]).all() for k in ckpt)


# --- one writer per folder: every stage and conj run --------------------------------------------


def _refused_while_locked(lock, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``conj argv`` while ``lock`` (the first run, still writing) is held; returns its error line."""
    with lock:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_second_training_run_into_a_folder_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from test_train import train_argv, write_pairs

    from conj_train.runs import folder_lock
    from conj_train.train.run_dir import TRAIN_LOCKS

    data, out = write_pairs(tmp_path / "filter", 4, 0), tmp_path / "t"
    argv = ["train", *train_argv(tiny_model_dir, data, out, max_steps=1)]
    err = _refused_while_locked(folder_lock(out, "train", folder=TRAIN_LOCKS), argv, capsys)
    assert "another run is writing a training run" in err
    assert not (out / "run.json").exists()  # nothing claimed, nothing written


def test_second_reward_model_run_into_a_folder_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from conj_train.runs import folder_lock
    from conj_train.train.run_dir import TRAIN_LOCKS

    data, out = _pairs(tmp_path / "d.jsonl", 4), tmp_path / "rm"
    argv = ["train-rm", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data),
            "--output_dir", str(out), "--max_steps", "1", "--report_to", "none"]
    err = _refused_while_locked(folder_lock(out, "train", folder=TRAIN_LOCKS), argv, capsys)
    assert "another run is writing a training run" in err


def test_second_filter_run_into_a_folder_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from conj_train.runs import folder_lock

    sample, out = tmp_path / "s", tmp_path / "f"
    run_sample(_cfg(tiny_model_dir, _pairs(tmp_path / "d.jsonl", 2), sample))
    argv = ["filter", "--dataset_name", str(sample), "--output_dir", str(out)]
    assert "another run is writing a filter run" in _refused_while_locked(folder_lock(out, "filter"), argv, capsys)
    assert not (out / "manifest.json").exists()
    assert main(argv) == 0  # the lock died with its holder


def test_second_pipeline_into_a_folder_is_refused(tiny_pipeline, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from conj_train.runs import folder_lock

    recipe = tiny_pipeline(tmp_path)
    out = Path(yaml.safe_load(recipe.read_text())["output_dir"])
    err = _refused_while_locked(folder_lock(out, "pipeline"), ["run", "--config", str(recipe)], capsys)
    assert "another run is writing a conj run pipeline" in err
    assert not (out / "pipeline_state.json").exists()


def test_a_run_of_another_shard_count_is_refused_while_one_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, out = _pairs(tmp_path / "d.jsonl", 4), tmp_path / "s"
    run_sample(_cfg(tiny_model_dir, data, out, shard="1/2"))  # shard 1 of 2 finished
    # shard 0 of 2 still writing
    with shard_lock(out, "shard-00000-of-00002"), pytest.raises(ConjError, match="a run with 2 shards is writing"):
        run_sample(_cfg(tiny_model_dir, data, out, shard="0/3", overwrite=True))
    assert read_json(out / "manifests" / "shard-00001-of-00002.json")["complete"]  # not cleared


def test_a_checkpoint_torn_by_a_kill_is_not_resumed(tmp_path: Path) -> None:
    from conj_train.train.run_dir import last_checkpoint

    for step, state in ((2, '{"global_step": 2}'), (4, ""), (6, '{"global_st')):  # killed while saving 4, 6
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
