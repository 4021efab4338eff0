"""``conj filter``: stage 2, label-agreement filtering into contrastive DPO pairs."""

from __future__ import annotations

import argparse

from conj_train.cli.common import add_settings_help


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``filter`` subcommand."""
    p = sub.add_parser(
        "filter",
        add_help=False,  # --help lists every recipe setting (add_settings_help)
        help="classify sampled judgments against the labels and build contrastive DPO pairs",
        description="Read a finished `conj sample` run (dataset_name, or --dataset DIR), classify every "
        "judgment with the strict parser, "
        "build Con-J's contrastive pairs per pair id and write a TRL preference dataset plus a report. "
        "Any recipe key can be overridden as --key value (e.g. --preset paper --balance true).",
    )
    p.add_argument("--config", help="recipe YAML (flat keys of FilterConfig, or a 'filter:' section)")
    add_settings_help(p, "conj_train.filter.run:FilterConfig")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    """Load the recipe, run the stage in this process, print the summary."""
    from conj_train.cli.common import load_stage_config
    from conj_train.filter.run import FilterConfig, run_filter

    cfg = load_stage_config(FilterConfig, args.config, args.overrides, section="filter")
    result = run_filter(cfg)
    print(result.summary or result.counts)
    return 0
