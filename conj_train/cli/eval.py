"""``conj eval``: stage 4, judge evaluation (both orders, consistency, bias, probabilities).

The stage's one entry: ``conj eval``, ``python -m conj_train.cli.eval`` and
``accelerate launch --num_processes K -m conj_train.cli.eval --config R.yaml`` (each process judges the
pairs whose stable id hashes to its rank, for every model; the last to finish scores all shards and
writes metrics.json, summary.md and the charts) all parse here and run :func:`evaluate`, which
``conj run`` calls too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from conj_train.cli.common import add_settings_help


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The named options of ``conj eval`` (the rest are ``--key value``).

    ``--model``, ``--dataset`` and ``--output`` are the short spellings of the recipe keys
    ``model_name_or_path``, ``dataset_name`` and ``output_dir``.
    """
    p.add_argument("--config", help="recipe YAML (flat keys of EvalConfig, or an 'eval:' section)")
    p.add_argument(
        "--model", "--model_name_or_path",
        dest="model_name_or_path",
        action="append",
        metavar="[NAME=]PATH",
        help="judge, base model or scalar reward model; repeat to compare several side by side",
    )
    p.add_argument(
        "--dataset", "--dataset_name",
        dest="dataset_name",
        action="append",
        metavar="[NAME=]SOURCE",
        help="preference file, folder or Hub id; repeat for several",
    )
    p.add_argument("--output", "--output_dir", dest="output_dir", metavar="DIR", help="output folder")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser(
        "eval",
        add_help=False,  # --help lists every recipe setting (add_settings_help)
        allow_abbrev=False,  # "--model_kind" etc. are overrides, never abbreviations of "--model"
        help="evaluate judges / reward models on preference sets (both orders, bias, calibration)",
        description="Judge every pair in its seeded random order and, with --orders both (default), "
        "swapped; write per-example records, metrics.json, summary.md and charts. Any recipe key can be "
        "overridden as --key value, e.g. --orders random --decoding sample --n 5 --engine vllm "
        "--parser strict --template conj-en --max_new_tokens 512 --model_kind rm. Data parallel: "
        "accelerate launch --num_processes K -m conj_train.cli.eval ..., or --shard i/K per job.",
    )
    add_arguments(p)
    add_settings_help(p, "conj_train.evaluate.config:EvalConfig")
    p.set_defaults(func=run, accepts_overrides=True)


def load_eval_config(args: argparse.Namespace, overrides: Sequence[str]) -> Any:
    """An EvalConfig from the recipe, then ``--key value`` overrides, then the named options."""
    from conj_train.cli.common import load_stage_config
    from conj_train.evaluate.config import EvalConfig

    named = {k: getattr(args, k) for k in ("model_name_or_path", "dataset_name", "output_dir") if getattr(args, k, None)}
    return load_stage_config(EvalConfig, args.config, overrides, section="eval", fixed=named)


def evaluate(cfg: Any) -> Any:
    """Set up this process and evaluate: this rank's shard under a launcher (rank and world size from
    its environment), every pair otherwise; the process that completes the last shard merges."""
    from conj_train.cli.common import launcher_rank_world, prepare_sharded_process
    from conj_train.evaluate.run import run_eval

    rank, world = launcher_rank_world()
    prepare_sharded_process(cfg, world)
    return run_eval(cfg, rank=rank, world=world)


def run(args: argparse.Namespace) -> int:
    """Load the configuration, evaluate, print the summary."""
    from conj_train.cli.common import print_rank_summary

    cfg = load_eval_config(args, args.overrides)
    result = evaluate(cfg)
    print_rank_summary(str(result.summary or result.counts))
    if result.merged:
        print(f"wrote {cfg.output_dir}/metrics.json, summary.md, accuracy.png, reliability.png")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``conj eval`` with ``argv`` (default: the command line); returns the exit code."""
    from conj_train.cli.common import stage_main

    return stage_main("eval", argv)


if __name__ == "__main__":
    sys.exit(main())
