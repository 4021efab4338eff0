"""`conj run`: stages chain, a rerun is cached, a change redoes exactly the stages it affects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conj_train.errors import ConjError
from conj_train.io import read_json
from conj_train.pipeline import run_pipeline


def _recipe(tmp_path: Path, model: Path, **extra) -> Path:
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Question {i}: name a fruit.", "chosen": f"apple {i}.", "rejected": f"hammer {i}."}
            for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "output_dir": str(tmp_path / "run"),
        "base_model": str(model),
        "dataset": str(data),
        "heldout": str(data),
        "sample": {"n": 2, "hint_samples": 1, "max_new_tokens": 8, "progress": False, "threads": 1},
        "filter": {"validation_share": 0.0},
        "train": {"dtype": "float32", "max_length": 512, "loss_type": ["sigmoid", "sft"],
                  "loss_weights": [1.0, 0.1], "learning_rate": 1e-3, "max_steps": 2,
                  "per_device_train_batch_size": 2, "gradient_checkpointing": False, "bf16": False,
                  "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
                  "disable_tqdm": True, "logging_steps": 1},
        "eval": {"max_new_tokens": 8, "max_pairs": 3, "transfer": False, "progress": False, "threads": 1},
    }
    for dotted, value in extra.items():
        stage, _, key = dotted.partition("__")
        spec.setdefault(stage, {})[key] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_cache_and_invalidation(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir)
    first = run_pipeline(recipe)
    assert _statuses(first) == dict.fromkeys(("sample", "filter", "train", "eval"), "ran")
    out = tmp_path / "run"
    assert (out / "train" / "model.safetensors").exists()
    metrics = read_json(out / "eval" / "metrics.json")

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


def test_from_and_until(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir)
    partial = run_pipeline(recipe, until="filter")
    assert list(_statuses(partial)) == ["sample", "filter"]
    assert not (tmp_path / "run" / "train").exists()
    redo = run_pipeline(recipe, from_stage="filter", until="filter")
    assert _statuses(redo) == {"sample": "cached", "filter": "ran"}


def test_two_rounds_sample_with_the_previous_judge(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir)
    spec = yaml.safe_load(recipe.read_text())
    spec["rounds"] = 2
    recipe.write_text(yaml.safe_dump(spec))
    result = run_pipeline(recipe)
    out = tmp_path / "run"
    assert [s.name for s in result.stages] == [f"{st}[round {r}]" for r in (1, 2)
                                               for st in ("sample", "filter", "train", "eval")]
    round2 = read_json(out / "round-2" / "sample" / "manifest.json")["config"]
    assert round2["model"] == str(out / "round-1" / "train")
    assert (out / "round-2" / "eval" / "metrics.json").exists()


@pytest.mark.parametrize(("change", "needle"), [
    ({"bogus": 1}, "unknown pipeline key 'bogus'"),
    ({"rounds": 0}, "rounds must be >= 1"),
    ({"dataset": ""}, "'dataset' is required"),
])
def test_bad_recipes_are_one_line_errors(tiny_model_dir: Path, tmp_path: Path, change: dict,
                                         needle: str) -> None:
    recipe = _recipe(tmp_path, tiny_model_dir)
    spec = {**yaml.safe_load(recipe.read_text()), **change}
    recipe.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConjError, match=needle):
        run_pipeline(recipe)
