"""The one config system of the conj stages (conj_train/config*.py): typing, names, hints, hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conj_train.config import config_to_dict
from conj_train.config.parser import ConjParser, build_config, load_config
from conj_train.errors import ConjError
from conj_train.evaluate.run import EvalConfig
from conj_train.filter.rules import LengthRule, PairRules
from conj_train.filter.run import FilterConfig
from conj_train.sample.run import SampleConfig
from conj_train.train.warmup import WarmupConfig

INPUTS = ["--model_name_or_path", "m", "--dataset_name", "d", "--output_dir", "o"]


def test_command_line_values_are_typed_as_yaml() -> None:
    cfg = load_config(SampleConfig, None, [*INPUTS, "--n", "4", "--hint_reading=code", "--max_pairs", "null",
                                           "--overwrite", "--field_map", "{prompt_field: q}", "--temperature", "0.5"])
    assert (cfg.n, cfg.hint_reading, cfg.max_pairs, cfg.overwrite) == (4, "code", None, True)
    assert cfg.field_map == {"prompt_field": "q"} and cfg.temperature == 0.5
    assert load_config(SampleConfig, None, [*INPUTS, "--hint-reading", "code"]).hint_reading == "code"


def test_overrides_win_over_the_recipe_and_named_options_over_both(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset_name": "d", "output_dir": "o", "n": 2}))
    assert load_config(SampleConfig, recipe, ["--n", "5"]).n == 5
    assert load_config(SampleConfig, recipe, ["--n", "5"], fixed={"n": 6}).n == 6


def test_short_input_flags_map_onto_the_one_name() -> None:
    cfg = load_config(SampleConfig, None, ["--model", "m", "--dataset", "d", "--output", "o"])
    assert (cfg.model_name_or_path, cfg.dataset_name, cfg.output_dir) == ("m", "d", "o")
    ev = load_config(EvalConfig, None, ["--model", "a=x", "--model", "b=y", "--dataset", "d", "--output", "o"])
    assert ev.model_specs() == [("a", "x"), ("b", "y")]


@pytest.mark.parametrize(("cls", "key", "hint"), [
    (SampleConfig, "model", "model_name_or_path"),
    (SampleConfig, "dataset", "dataset_name"),
    (FilterConfig, "sample_dir", "dataset_name"),
    (EvalConfig, "samples", "n"),
    (WarmupConfig, "model", "model_name_or_path"),
    (SampleConfig, "max_new_tokenz", "max_new_tokens"),
    (FilterConfig, "cut_trigger_char", "cut_trigger_chars"),
])
def test_unknown_keys_are_refused_with_the_new_or_closest_name(cls: type, key: str, hint: str) -> None:
    with pytest.raises(ConjError, match=f"unknown key '{key}' in r.yaml \\(did you mean '{hint}'\\?\\)"):
        build_config(cls, {key: 1}, where="r.yaml")
    if key in ("model", "dataset"):  # short command-line flags of the new names (see below)
        return
    with pytest.raises(ConjError, match=f"unknown key '{key}' in command-line options \\(did you mean '{hint}'"):
        load_config(cls, None, [f"--{key}", "1"])


def test_no_abbreviations_and_stray_values_are_refused() -> None:
    with pytest.raises(ConjError, match="unknown key 'model_kind'"):
        load_config(SampleConfig, None, [*INPUTS, "--model_kind", "judge"])  # not a prefix of anything
    with pytest.raises(ConjError, match="unknown key 'hint_read'"):
        load_config(SampleConfig, None, [*INPUTS, "--hint_read", "code"])
    with pytest.raises(ConjError, match="expected --key value, got '5'"):
        load_config(SampleConfig, None, [*INPUTS, "--n", "4", "5"])


def test_filter_rules_are_the_cores_dataclasses_parsed_from_flat_keys() -> None:
    cfg = build_config(FilterConfig, {"dataset_name": "s", "output_dir": "o", "preset": "paper", "seed": 7,
                                      "pair_types": "best_of_n, preamble", "cut_trigger_chars": 90,
                                      "length_rule": False})
    assert cfg.rules == PairRules(preset="paper", seed=7, pair_types=("best_of_n", "preamble"))
    assert cfg.length == LengthRule(length_rule=False, cut_trigger_chars=90)
    flat = config_to_dict(cfg)
    assert flat["preset"] == "paper" and flat["cut_trigger_chars"] == 90 and "rules" not in flat
    with pytest.raises(ConjError, match="pair_types must be a list"):
        build_config(FilterConfig, {"dataset_name": "s", "output_dir": "o", "pair_types": 3})


def test_every_setting_has_one_name_and_a_part() -> None:
    for cls in (SampleConfig, FilterConfig, EvalConfig, WarmupConfig):
        settings = ConjParser(cls).settings
        assert "model" not in settings and "dataset" not in settings
    assert ConjParser(SampleConfig).settings["engine"][0].__name__ == "EngineOptions"
    assert ConjParser(FilterConfig).settings["cut_tokens"][0] is LengthRule


def test_renamed_settings_keep_the_config_hashes_of_existing_run_folders() -> None:
    """The hashes a run folder claims were computed under the old field names: renaming must not orphan them.

    Values computed by the code before the rename (model/dataset/sample_dir/samples).
    """
    sample = build_config(SampleConfig, {"model_name_or_path": "m", "dataset_name": "d", "output_dir": "o", "n": 3,
                                         "hf_batch_tokens": 5, "threads": 2})
    ev = build_config(EvalConfig, {"model_name_or_path": ["a=m"], "dataset_name": "x=d", "output_dir": "o",
                                   "decoding": "sample", "n": 3})
    warm = build_config(WarmupConfig, {"model_name_or_path": "m", "dataset_name": "d", "output_dir": "o",
                                       "max_steps": 3})
    filt = build_config(FilterConfig, {"dataset_name": "s", "output_dir": "o", "pair_types": ["best_of_n"],
                                       "cut_tokens": 9, "seed": 4, "balance": True})
    assert sample.output_hash() == "922faa0c6d7482ab"
    assert ev.output_hash("m", "judge") == "9e87be5b302e6e74"
    assert warm.output_hash() == "d162030209ee7804"
    assert filt.output_hash() == "70128a0666a13a13"


def test_warmup_keeps_its_recipe_keys_and_hash_with_the_shared_parts() -> None:
    """WarmupConfig mixes in the judge-input parts it shares with sample/eval: same keys, same hash.

    Keys and hash as computed when the warm-up declared those fields itself (existing run folders resume).
    """
    assert sorted(ConjParser(WarmupConfig).settings) == [
        "dataset_format", "dataset_name", "field_map", "learning_rate", "logging_steps", "lr_scheduler_type",
        "max_length", "max_pairs", "max_steps", "model_name_or_path", "multi_turn", "num_train_epochs",
        "output_dir", "overwrite", "per_device_train_batch_size", "rationale", "seed", "swap_seed",
        "system_prompt", "template", "threads", "verdict_seed", "warmup_steps", "weight_decay"]
    warm = build_config(WarmupConfig, {
        "model_name_or_path": "m", "dataset_name": "d", "output_dir": "o", "dataset_format": "fields",
        "field_map": {"prompt_field": "q"}, "multi_turn": "first_turn", "max_pairs": 7, "template": "conj-en",
        "system_prompt": "be fair", "swap_seed": 5, "verdict_seed": 2, "threads": 1})
    assert warm.output_hash() == "9d3af10ddf5f3345"
    sample = build_config(SampleConfig, {"model_name_or_path": "m", "dataset_name": "d", "output_dir": "o",
                                         "template": "conj-en", "system_prompt": "x", "swap_seed": 4,
                                         "max_pairs": 3, "multi_turn": "first_turn", "longer": "chosen"})
    assert sample.output_hash() == "603669863ad57b01"


def test_sample_and_eval_share_one_decoding_part_with_their_own_defaults() -> None:
    """Decoding is declared once (DecodingOptions): same recipe keys and help, each stage's defaults kept."""
    from conj_train.config import DecodingOptions

    names = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")
    for cls, defaults in ((SampleConfig, (1.2, 0.95, 50, 1.2, 512)), (EvalConfig, (1.0, 0.9, 0, 1.0, 512))):
        settings = ConjParser(cls).settings
        assert all(issubclass(settings[n][0], DecodingOptions) for n in names)
        assert tuple(getattr(cls(), n) for n in names) == defaults
    assert build_config(SampleConfig, {"model_name_or_path": "m", "dataset_name": "d", "output_dir": "o",
                                       "top_k": 7}).repeated_params().top_k == 7
