"""``conj sample``: stage 1, repeated + hint-driven judgment sampling."""

from __future__ import annotations

import argparse

from conj_train.cli.common import add_settings_help


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sample`` subcommand."""
    p = sub.add_parser(
        "sample",
        add_help=False,  # --help lists every recipe setting (add_settings_help)
        help="sample judgments (repeated + hint-driven) from the base model",
        description="Render judge prompts for a preference source and let the model write judgments. "
        "Any recipe key can be overridden as --key value (e.g. --n 4 --hint_reading code; --model, "
        "--dataset and --output are short for model_name_or_path, dataset_name and output_dir). "
        "Data parallel: accelerate launch --num_processes K scripts/sample.py --config R.yaml, or "
        "--shard i/K per job, then --merge_only true.",
    )
    p.add_argument("--config", help="recipe YAML (flat keys of SampleConfig, or a 'sample:' section)")
    add_settings_help(p, "conj_train.sample.config:SampleConfig")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    """Load the recipe, run the stage in this process, print the summary."""
    from conj_train.cli.common import load_stage_config
    from conj_train.sample.run import SampleConfig, run_sample

    cfg = load_stage_config(SampleConfig, args.config, args.overrides, section="sample")
    result = run_sample(cfg)
    print(result.summary or result.counts)
    return 0
