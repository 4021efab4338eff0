"""``conj demo``: run the pipeline end to end on the embedded default (tiny model + toy data), offline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="run the pipeline on the embedded demo (tiny model, toy data; CPU, offline)",
        description="Build a tiny model and the toy 'fruit' preference set (train + held-out), run the "
        "demo pipeline (warm-up, sample, filter, DPO, scalar RM, eval) and print the held-out table: base "
        "judge vs scalar RM vs Con-J judge, both answer orders. Fails if Con-J does not beat the base "
        "judge by the recipe's min_gain. Stage keys can be overridden as --STAGE.KEY value.",
    )
    p.add_argument("--config", help="demo pipeline recipe (default: the shipped recipes/demo/pipeline.yaml; "
                   "`conj recipe copy demo DIR` copies it to edit)")
    p.add_argument("--output", help="output folder (default: the recipe's output_dir, runs/demo)")
    p.add_argument("--seed", type=int, help="seed of the tiny model and the toy data (default: the recipe's)")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    """Run the demo stages one after the other, printing what each produced."""
    from conj_train.config.values import parse_overrides
    from conj_train.pipeline.demo import run_demo

    print(run_demo(args.output, config=args.config, seed=args.seed, overrides=parse_overrides(args.overrides)))
    return 0
