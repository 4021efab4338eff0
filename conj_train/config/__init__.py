"""Recipes and options: YAML + ``--key value``, one parser for every stage, types, bounds, "did you mean".

    options  the option parts the stages share (engine, judge prompt, inputs, sharded runs, publishing),
             ``settings_hash``
    parser   ``ConjParser`` (HfArgumentParser): a recipe file plus overrides into a stage's config
    values   YAML and value checks, unknown-key hints, the settings as options (``conj <stage> --help``)

The shared option parts are re-exported here (``from conj_train.config import EngineOptions``); only
``options`` is imported, which needs the standard library alone, so the CLI stays light (``parser``
imports transformers).
"""

from conj_train.config.options import (
    DTYPES,
    INPUT_OLD_NAMES,
    PUBLISH_FIELDS,
    RUNTIME_FIELDS,
    TRACKERS,
    DecodingOptions,
    EngineOptions,
    JudgeInputOptions,
    JudgePromptOptions,
    PreferenceReadOptions,
    PublishOptions,
    ShardedRunOptions,
    config_to_dict,
    decoding_part,
    select_by_length,
    settings_hash,
)

__all__ = [
    "DTYPES",
    "INPUT_OLD_NAMES",
    "PUBLISH_FIELDS",
    "RUNTIME_FIELDS",
    "TRACKERS",
    "DecodingOptions",
    "EngineOptions",
    "JudgeInputOptions",
    "JudgePromptOptions",
    "PreferenceReadOptions",
    "PublishOptions",
    "ShardedRunOptions",
    "config_to_dict",
    "decoding_part",
    "select_by_length",
    "settings_hash",
]
