"""Every shipped recipe loads into its stage's dataclasses, and the flat demo recipes agree with the pipeline.

A typo in any recipe (a key a stage does not have, a value of the wrong type) fails here, in CI,
rather than hours into a run. Paths need not exist: only the configs are built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conj_train.config_parser import build_config
from conj_train.config_values import read_yaml

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
        from conj_train.judge_reward import parse_grpo_args

        return parse_grpo_args(["--config", str(recipe)])
    from conj_train.train.reward import parse_reward_args

    return parse_reward_args(["--config", str(recipe)])


FLAT = sorted(p for p in RECIPES.rglob("*.yaml") if p.name != "pipeline.yaml" and "ablations" not in p.parts)
PIPELINES = sorted(RECIPES.rglob("pipeline.yaml"))
ABLATIONS = sorted((RECIPES / "ablations").glob("*.yaml"))
# Ablations of one study, next to its pipeline recipe (recipes/<study>/ablations/*.yaml).
STUDY_ABLATIONS = sorted(RECIPES.glob("*/ablations/*.yaml"))


def test_every_recipe_is_covered() -> None:
    assert len(FLAT) + len(PIPELINES) + len(ABLATIONS) + len(STUDY_ABLATIONS) == len(
        list(RECIPES.rglob("*.yaml")))
    assert {p.parent.name for p in FLAT} == {"con-j-qwen2-7b", "demo"}
    assert {p.parent.name for p in PIPELINES} == {"demo", "smollm2"}


@pytest.mark.parametrize("recipe", FLAT, ids=lambda p: str(p.relative_to(RECIPES)))
def test_flat_recipe_loads_into_its_stage(recipe: Path) -> None:
    stage = _stage_of(recipe)
    if stage in ("train", "train_rm", "grpo"):
        _parse_training(stage, recipe)
    else:
        build_config(_stage_class(stage), read_yaml(recipe), where=str(recipe))


def _pipeline_stage_configs(spec: dict[str, Any], where: str, tmp: Path) -> None:
    """Build every section of a pipeline spec with placeholder inputs, as ``conj run`` fills them."""
    filled = {"output_dir": str(tmp / "out")}
    inputs = {
        "warmup": {"model_name_or_path": "m", "dataset_name": "d"},
        "sample": {"model_name_or_path": "m", "dataset_name": "d"},
        "filter": {"dataset_name": str(tmp / "s")},
        "eval": {"model_name_or_path": ["base=m"], "dataset_name": spec.get("heldout", "d")},
    }
    for stage, extra in inputs.items():
        if spec.get(stage) is None and stage == "warmup":
            continue
        values = {**extra, **(spec.get(stage) or {}), **filled}
        build_config(_stage_class(stage), values, where=f"{where} [{stage}]")
    for stage in ("train", "train_rm"):
        if spec.get(stage) is None:
            continue
        import yaml

        values = {**spec[stage], "model_name_or_path": "m", "dataset_name": "d", **filled}
        if stage == "train_rm":
            values["pairs_from"] = str(tmp / "f")
        recipe = tmp / f"{stage}.yaml"
        recipe.write_text(yaml.safe_dump(values))
        _parse_training(stage, recipe)


@pytest.mark.parametrize("recipe", PIPELINES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_pipeline_recipe_sections_load(recipe: Path, tmp_path: Path) -> None:
    from conj_train.pipeline.run import load_pipeline

    _pipeline_stage_configs(load_pipeline(recipe), str(recipe), tmp_path)


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda p: p.stem)
def test_ablation_applies_to_the_demo_pipeline(ablation: Path, tmp_path: Path) -> None:
    from conj_train.pipeline.ablate import load_ablation
    from conj_train.pipeline.run import load_pipeline

    ab = load_ablation(ablation)
    spec = load_pipeline(RECIPES / "demo" / "pipeline.yaml", ab.overrides)
    _pipeline_stage_configs(spec, str(ablation), tmp_path)


@pytest.mark.parametrize("ablation", STUDY_ABLATIONS, ids=lambda p: f"{p.parts[-3]}-{p.stem}")
def test_study_ablation_applies_to_its_pipeline(ablation: Path, tmp_path: Path) -> None:
    from conj_train.pipeline.ablate import load_ablation
    from conj_train.pipeline.run import load_pipeline

    ab = load_ablation(ablation)
    spec = load_pipeline(ablation.parent.parent / "pipeline.yaml", ab.overrides)
    _pipeline_stage_configs(spec, str(ablation), tmp_path)


@pytest.mark.parametrize("stage", ["sample", "filter", "train", "train_rm", "eval"])
def test_flat_demo_recipe_equals_its_pipeline_section(stage: str) -> None:
    flat = read_yaml(RECIPES / "demo" / f"{stage}.yaml")
    section = read_yaml(RECIPES / "demo" / "pipeline.yaml")[stage]
    assert {k: v for k, v in flat.items() if k not in FILLED} == section
    assert FILLED & set(flat) >= {"output_dir"}
    assert all("runs/demo-stages/" in str(flat[k]) for k in ("output_dir",))
