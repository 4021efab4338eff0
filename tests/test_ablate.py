"""`conj ablate`: ablations reuse the base run's unchanged stages and land in one table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conj_train.errors import ConjError
from conj_train.io import read_json
from conj_train.pipeline.ablate import load_ablation, run_ablations

REPO = Path(__file__).resolve().parents[1]


def _ablation(folder: Path, name: str, overrides: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "description": f"test {name}", "overrides": overrides}))
    return path


def test_ablations_reuse_cached_stages_and_tabulate(tiny_pipeline, tmp_path: Path) -> None:
    base = tiny_pipeline(tmp_path)
    no_sft = _ablation(tmp_path, "no-sft", {"train.loss_type": ["sigmoid"], "train.loss_weights": [1.0]})
    out = tmp_path / "ablations"
    # Hint pairs only, but the base samples no hints: no pairs, so the ablation fails and is reported.
    empty = _ablation(tmp_path, "hint-only", {"filter.pair_types": ["preamble"]})
    table = run_ablations([no_sft, empty], base=base, output=out)
    assert list(table["failed"]) == ["hint-only"]
    state = read_json(out / "no-sft" / "pipeline_state.json")
    assert all(v["complete"] for v in state.values())
    # The sampling run of the ablation is the base's, untouched (cached, not redone).
    assert (out / "no-sft" / "sample" / "manifest.json").read_bytes() == \
        (out / "base" / "sample" / "manifest.json").read_bytes()
    assert (out / "no-sft" / "train" / "manifest.json").read_bytes() != \
        (out / "base" / "train" / "manifest.json").read_bytes()
    ablations = {r["ablation"] for r in table["rows"]}
    assert ablations == {"base", "no-sft"}
    assert {r["model"] for r in table["rows"]} == {"base", "conj"}
    md = (out / "table.md").read_text()
    assert "| no-sft | conj |" in md and (out / "chart.png").stat().st_size > 0
    assert "- **hint-only**: failed: " in md
    assert read_json(out / "table.json") == table


def test_bad_ablation_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "override": {}}))
    with pytest.raises(ConjError, match="unknown key 'override'"):
        load_ablation(bad)
    bad.write_text(yaml.safe_dump({"name": "a b", "overrides": {}}))
    with pytest.raises(ConjError, match="must be letters"):
        load_ablation(bad)


def test_shipped_ablations_override_known_keys_of_the_demo_recipe() -> None:
    import dataclasses

    from trl import ModelConfig

    from conj_train.evaluate.run import EvalConfig
    from conj_train.filter.run import FilterConfig
    from conj_train.pipeline.run import load_pipeline
    from conj_train.sample.run import SampleConfig
    from conj_train.train.args import ConjDPOConfig, TrainScriptArguments

    def names(*classes: type) -> set[str]:
        return {f.name for c in classes for f in dataclasses.fields(c)}

    from conj_train.config.parser import ConjParser

    def settings(cls: type) -> set[str]:  # flat recipe keys, nested rule dataclasses included
        return set(ConjParser(cls).settings)

    known = {"sample": settings(SampleConfig), "filter": settings(FilterConfig), "eval": settings(EvalConfig),
             "train": names(ConjDPOConfig, TrainScriptArguments, ModelConfig)}
    paths = sorted(REPO.glob("recipes/ablations/*.yaml"))
    assert len(paths) >= 12
    for path in paths:
        ablation = load_ablation(path)
        spec = load_pipeline(REPO / "recipes/demo/pipeline.yaml", ablation.overrides)
        for dotted in ablation.overrides:
            stage, _, key = dotted.partition(".")
            assert not key or key in known[stage], (path.name, dotted)
            assert key or stage in spec, (path.name, dotted)
