"""``conj ablate``: run ablation recipes against a base pipeline and write one comparison table."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ablate`` subcommand."""
    p = sub.add_parser(
        "ablate",
        help="run ablations (small overrides of a base pipeline recipe) and tabulate them",
        description="Each ablation file has name, description and overrides (stage.key: value) of the "
        "base pipeline recipe. Unchanged stages are reused from the base run.",
    )
    p.add_argument("ablations", nargs="+", help="ablation YAML files (e.g. recipes/ablations/*.yaml)")
    p.add_argument("--base", required=True, help="base pipeline recipe, or a folder with pipeline.yaml")
    p.add_argument("--output", default="runs/ablations", help="output folder (default runs/ablations)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ablations and print where the table went."""
    from conj_train.pipeline.ablate import run_ablations

    run_ablations(args.ablations, base=args.base, output=args.output)
    print(f"ablation table: {args.output}/table.md (+ table.json, chart.png)")
    return 0
