"""``conj recipe``: the shipped recipes and accelerate configs; copy a recipe to start an experiment."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``recipe`` subcommand (``list``, ``copy``)."""
    p = sub.add_parser(
        "recipe",
        help="list the shipped recipes, or copy one into a folder to start an experiment",
        description="The recipes and accelerate configs installed with conj-train (the repository's "
        "recipes/ and accelerate_configs/). `conj recipe copy demo my-exp` copies recipes/demo/*; it "
        "refuses to overwrite a file. A launch: section names a shipped accelerate config by name "
        "(launch: {train: {config_file: zero3, num_processes: 8}}).",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("list", help="list the shipped recipes and accelerate configs").set_defaults(func=run_list)
    copy = verbs.add_parser("copy", help="copy a shipped recipe's files into a folder (never overwrites)")
    copy.add_argument("name", help="recipe, as `conj recipe list` shows it (e.g. demo, con-j-qwen2-7b)")
    copy.add_argument("dest", help="folder to copy into (created if missing)")
    copy.set_defaults(func=run_copy)


def run_list(args: argparse.Namespace) -> int:
    """Print the recipe names and the accelerate config names, with where they are installed."""
    from conj_train.pipeline.recipes import accelerate_config_names, recipe_names, shipped_dir

    print(f"recipes ({shipped_dir('recipes')}):")
    for name in recipe_names():
        print(f"  {name}")
    print(f"accelerate configs ({shipped_dir('accelerate_configs')}; launch: config_file: NAME):")
    print("  " + ", ".join(accelerate_config_names()))
    return 0


def run_copy(args: argparse.Namespace) -> int:
    """Copy the recipe and print the files written."""
    from conj_train.pipeline.recipes import copy_recipe

    for path in copy_recipe(args.name, args.dest):
        print(f"wrote {path}")
    return 0
