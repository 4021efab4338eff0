"""Every shipped recipe loads into its stage's dataclasses, and the flat demo recipes agree with the pipeline.

A typo in any recipe (a key a stage does not have, a value of the wrong type) fails here, in CI,
rather than hours into a run. Paths need not exist: only the configs are built.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from conj_train.config.parser import build_config
from conj_train.config.values import read_yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
# Keys a pipeline fills in for each stage (the inputs and outputs), so absent from its sections.
FILLED = {"model_name_or_path", "dataset_name", "output_dir", "pairs_from"}


def _stage_of(path: Path) -> str:
    """The stage a flat recipe configures, from its file name (train_lora.yaml -> train)."""
    stem = path.stem
    if stem.startswith("train_rm"):
        return "train_rm"
    if stem.startswith("grpo"):
        return "grpo"  # scripts/grpo_judge.py: the judge as an RL reward
    for stage in ("sample", "filter", "train", "eval"):
        if stem.startswith(stage):
            return stage
    raise AssertionError(f"{path}: no stage in its name")


def _stage_class(stage: str) -> type:
    from conj_train.evaluate.run import EvalConfig
    from conj_train.filter.run import FilterConfig
    from conj_train.sample.run import SampleConfig
    from conj_train.train.warmup import WarmupConfig

    return {"sample": SampleConfig, "filter": FilterConfig, "eval": EvalConfig, "warmup": WarmupConfig}[stage]


def _parse_training(stage: str, recipe: Path) -> tuple[Any, ...]:
    if stage == "train":
        from conj_train.train.args import parse_train_args

        return parse_train_args(["--config", str(recipe)])
    if stage == "grpo":
        from conj_train.inference.judge_reward import parse_grpo_args

        return parse_grpo_args(["--config", str(recipe)])
    from conj_train.train.reward import parse_reward_args

    return parse_reward_args(["--config", str(recipe)])


def _read_back(parsed: Sequence[Any], key: str) -> Any:
    """The value of setting ``key`` in the parsed config objects (a stage config's nested parts too)."""
    for obj in parsed:
        value = getattr(obj, key, None)
        if hasattr(obj, key) and not dataclasses.is_dataclass(value):
            return value
        for f in dataclasses.fields(obj):
            part = getattr(obj, f.name)
            if dataclasses.is_dataclass(part) and hasattr(part, key):
                return getattr(part, key)
    raise AssertionError(f"setting {key!r} is in no parsed config")


def _plain(value: Any) -> Any:
    """Enums as their values, tuples as lists: how the YAML wrote them."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _assert_values_kept(parsed: Sequence[Any], values: Mapping[str, Any], where: str) -> None:
    """Every recipe value reads back unchanged from the config that took it.

    Two spellings that transformers / TRL normalise on purpose compare equal: ``report_to: none`` is
    ``[]``, a one-item ``lora_target_modules`` list is its item."""
    for key, want in values.items():
        got = _plain(_read_back(parsed, key))
        want = _plain(want)
        if key == "report_to" and want == "none":
            want = []
        if key == "lora_target_modules" and isinstance(got, str):
            got = [got]
        assert got == want, f"{where}: {key} = {want!r} in the recipe, {got!r} after loading"


FLAT = sorted(p for p in RECIPES.rglob("*.yaml") if p.name != "pipeline.yaml" and "ablations" not in p.parts)
PIPELINES = sorted(RECIPES.rglob("pipeline.yaml"))
ABLATIONS = sorted((RECIPES / "ablations").glob("*.yaml"))
# Ablations of one study, next to its pipeline recipe (recipes/<study>/ablations/*.yaml).
STUDY_ABLATIONS = sorted(p for p in RECIPES.rglob("ablations/*.yaml") if p.parent != RECIPES / "ablations")


def test_every_recipe_is_covered() -> None:
    assert len(FLAT) + len(PIPELINES) + len(ABLATIONS) + len(STUDY_ABLATIONS) == len(
        list(RECIPES.rglob("*.yaml")))
    assert {p.parent.name for p in FLAT} == {"con-j-qwen2-7b", "demo"}
    assert {p.parent.name for p in PIPELINES} == {"demo", "smollm2", "relevance"}


@pytest.mark.parametrize("recipe", FLAT, ids=lambda p: str(p.relative_to(RECIPES)))
def test_flat_recipe_loads_into_its_stage(recipe: Path) -> None:
    stage = _stage_of(recipe)
    values = read_yaml(recipe)
    if stage in ("train", "train_rm", "grpo"):
        parsed = _parse_training(stage, recipe)
    else:
        parsed = (build_config(_stage_class(stage), values, where=str(recipe)),)
    _assert_values_kept(parsed, values, str(recipe))


def _pipeline_stage_configs(spec: dict[str, Any], where: str, tmp: Path) -> dict[str, Sequence[Any]]:
    """Build every section of a pipeline spec with placeholder inputs, as ``conj run`` fills them, and
    check that each section's values read back from its configs; the parsed configs by stage."""
    filled = {"output_dir": str(tmp / "out")}
    inputs = {
        "warmup": {"model_name_or_path": "m", "dataset_name": "d"},
        "sample": {"model_name_or_path": "m", "dataset_name": "d"},
        "filter": {"dataset_name": str(tmp / "s")},
        "eval": {"model_name_or_path": ["base=m"], "dataset_name": spec.get("heldout", "d")},
    }
    built: dict[str, Sequence[Any]] = {}
    for stage, extra in inputs.items():
        if spec.get(stage) is None and stage == "warmup":
            continue
        values = {**extra, **(spec.get(stage) or {}), **filled}
        built[stage] = (build_config(_stage_class(stage), values, where=f"{where} [{stage}]"),)
        _assert_values_kept(built[stage], values, f"{where} [{stage}]")
    for stage in ("train", "train_rm"):
        if spec.get(stage) is None:
            continue
        import yaml

        values = {**spec[stage], "model_name_or_path": "m", "dataset_name": "d", **filled}
        if stage == "train_rm":
            values["pairs_from"] = str(tmp / "f")
        recipe = tmp / f"{stage}.yaml"
        recipe.write_text(yaml.safe_dump(values))
        built[stage] = _parse_training(stage, recipe)
        _assert_values_kept(built[stage], values, f"{where} [{stage}]")
    return built


def _assert_overrides_applied(built: Mapping[str, Sequence[Any]], overrides: Mapping[str, Any], where: str) -> None:
    """Each ``stage.key`` override of an ablation is the value its stage's config holds."""
    staged = {k: v for k, v in overrides.items() if "." in k}
    assert staged, f"{where}: no stage.key override"
    for dotted, value in staged.items():
        stage, _, key = dotted.partition(".")
        _assert_values_kept(built[stage], {key: value}, f"{where} ({dotted})")


@pytest.mark.parametrize("recipe", PIPELINES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_pipeline_recipe_sections_load(recipe: Path, tmp_path: Path) -> None:
    from conj_train.pipeline.run import load_pipeline

    spec = load_pipeline(recipe)
    built = _pipeline_stage_configs(spec, str(recipe), tmp_path)
    # Every section the recipe has was built (warmup, train and train_rm are optional).
    assert set(built) == {"sample", "filter", "eval"} | {s for s in ("warmup", "train", "train_rm") if spec.get(s)}


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda p: p.stem)
def test_ablation_applies_to_the_demo_pipeline(ablation: Path, tmp_path: Path) -> None:
    from conj_train.pipeline.ablate import load_ablation
    from conj_train.pipeline.run import load_pipeline

    ab = load_ablation(ablation)
    spec = load_pipeline(RECIPES / "demo" / "pipeline.yaml", ab.overrides)
    _assert_overrides_applied(_pipeline_stage_configs(spec, str(ablation), tmp_path), ab.overrides, str(ablation))


@pytest.mark.parametrize("ablation", STUDY_ABLATIONS, ids=lambda p: f"{p.parts[-3]}-{p.stem}")
def test_study_ablation_applies_to_its_pipeline(ablation: Path, tmp_path: Path) -> None:
    from conj_train.pipeline.ablate import load_ablation
    from conj_train.pipeline.run import load_pipeline

    ab = load_ablation(ablation)
    spec = load_pipeline(ablation.parent.parent / "pipeline.yaml", ab.overrides)
    _assert_overrides_applied(_pipeline_stage_configs(spec, str(ablation), tmp_path), ab.overrides, str(ablation))


@pytest.mark.parametrize("stage", ["sample", "filter", "train", "train_rm", "eval"])
def test_flat_demo_recipe_equals_its_pipeline_section(stage: str) -> None:
    flat = read_yaml(RECIPES / "demo" / f"{stage}.yaml")
    section = read_yaml(RECIPES / "demo" / "pipeline.yaml")[stage]
    assert {k: v for k, v in flat.items() if k not in FILLED} == section
    assert FILLED & set(flat) >= {"output_dir"}
    assert all("runs/demo-stages/" in str(flat[k]) for k in ("output_dir",))
