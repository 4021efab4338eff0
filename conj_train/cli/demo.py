"""``conj demo``: run the pipeline end to end on the embedded default (tiny model + toy data), offline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="run the pipeline on the embedded demo (tiny model, toy data; CPU, offline)",
        description="Build a tiny model and the toy 'fruit' preference set, then run every stage that "
        "exists on them. Everything goes under --output (default runs/demo).",
    )
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--pairs", type=int, default=48, help="toy preference pairs (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and the toy data")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo stages one after the other, printing what each produced."""
    from conj_train.demo import run_demo

    print(run_demo(args.output, pairs=args.pairs, seed=args.seed))
    return 0
