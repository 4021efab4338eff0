"""``conj sample``: stage 1, repeated + hint-driven judgment sampling.

The stage's one entry: ``conj sample``, ``python -m conj_train.cli.sample`` and
``accelerate launch --num_processes K -m conj_train.cli.sample --config R.yaml`` (each process samples
the pairs whose stable id hashes to its rank and writes its own shard; the last to finish merges) all
parse here and run :func:`sample`, which ``conj run`` calls too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

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
        "Data parallel: accelerate launch --num_processes K -m conj_train.cli.sample --config R.yaml, or "
        "--shard i/K per job, then --merge_only true.",
    )
    p.add_argument("--config", help="recipe YAML (flat keys of SampleConfig, or a 'sample:' section)")
    add_settings_help(p, "conj_train.sample.config:SampleConfig")
    p.set_defaults(func=run, accepts_overrides=True)


def sample(cfg: Any) -> Any:
    """Set up this process and sample: this rank's shard under a launcher (rank and world size from
    its environment: :func:`~conj_train.cli.common.launcher_rank_world`), every pair otherwise."""
    from conj_train.cli.common import launcher_rank_world, prepare_sharded_process
    from conj_train.sample.run import run_sample

    rank, world = launcher_rank_world()
    prepare_sharded_process(cfg, world)
    return run_sample(cfg, rank=rank, world=world)


def run(args: argparse.Namespace) -> int:
    """Load the recipe, sample, print the summary."""
    from conj_train.cli.common import load_stage_config, print_rank_summary
    from conj_train.sample.run import SampleConfig

    result = sample(load_stage_config(SampleConfig, args.config, args.overrides, section="sample"))
    print_rank_summary(str(result.summary or result.counts))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``conj sample`` with ``argv`` (default: the command line); returns the exit code."""
    from conj_train.cli.common import stage_main

    return stage_main("sample", argv)


if __name__ == "__main__":
    sys.exit(main())
