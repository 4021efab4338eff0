"""``conj eval``: stage 4, judge evaluation (both orders, consistency, bias, probabilities)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``conj eval`` and ``scripts/eval.py`` (the rest are ``--key value``)."""
    p.add_argument("--config", help="recipe YAML (flat keys of EvalConfig, or an 'eval:' section)")
    p.add_argument(
        "--model",
        action="append",
        metavar="[NAME=]PATH",
        help="judge, base model or scalar reward model; repeat to compare several side by side",
    )
    p.add_argument(
        "--dataset",
        action="append",
        metavar="[NAME=]SOURCE",
        help="preference file, folder or Hub id; repeat for several",
    )
    p.add_argument("--output", dest="output_dir", metavar="DIR", help="output folder")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser(
        "eval",
        allow_abbrev=False,  # "--model_kind" etc. are overrides, never abbreviations of "--model"
        help="evaluate judges / reward models on preference sets (both orders, bias, calibration)",
        description="Judge every pair in its seeded random order and, with --orders both (default), "
        "swapped; write per-example records, metrics.json, summary.md and charts. Any recipe key can be "
        "overridden as --key value, e.g. --orders random --decoding sample --samples 5 --engine vllm "
        "--parser strict --template conj-en --max_new_tokens 512 --model_kind rm. Data parallel: "
        "accelerate launch --num_processes K scripts/eval.py ..., or --shard i/K per job.",
    )
    add_arguments(p)
    p.set_defaults(func=run, accepts_overrides=True)


def load_eval_config(args: argparse.Namespace, overrides: Sequence[str]) -> Any:
    """An EvalConfig from the recipe, then ``--key value`` overrides, then the named options."""
    from conj_train.config import build_config, parse_overrides, read_yaml
    from conj_train.evaluate import EvalConfig

    values: dict[str, Any] = {}
    where = "command-line options"
    if args.config is not None:
        values = read_yaml(args.config)
        if "eval" in values:
            values = values["eval"] or {}
        where = str(args.config)
    values.update(parse_overrides(overrides))
    for key in ("model", "dataset", "output_dir"):
        if getattr(args, key, None):
            values[key] = getattr(args, key)
    return build_config(EvalConfig, values, where=where)


def run(args: argparse.Namespace) -> int:
    """Load the configuration, run the stage in this process, print the summary."""
    from conj_train.evaluate import run_eval

    cfg = load_eval_config(args, args.overrides)
    result = run_eval(cfg)
    print(result.summary or result.counts)
    if result.merged:
        print(f"wrote {cfg.output_dir}/metrics.json, summary.md, accuracy.png, reliability.png")
    return 0
