"""``conj run``: the whole pipeline from one recipe, skipping every stage whose inputs are unchanged."""

from __future__ import annotations

import argparse

from conj_train.errors import ConjError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser(
        "run",
        help="run data -> sample -> filter -> train -> eval from a pipeline recipe (cached stages)",
        description="Run every stage of a pipeline recipe (see recipes/demo/pipeline.yaml). A stage whose "
        "config and inputs are unchanged is skipped; a changed one is redone with everything after it. "
        "Override any stage key as --STAGE.KEY value (e.g. --sample.n 4) or a top-level key as --KEY value.",
    )
    p.add_argument("--config", required=True, help="pipeline recipe YAML")
    p.add_argument("--from", dest="from_stage", help="redo this stage and every later one")
    p.add_argument("--until", help="stop after this stage")
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    """Parse the overrides, run the pipeline, print what ran and what was cached."""
    from conj_train.config.values import parse_overrides
    from conj_train.pipeline.run import run_pipeline

    overrides = parse_overrides(args.overrides)
    bad = [k for k in overrides if k.count(".") > 1]
    if bad:
        raise ConjError(f"override {bad[0]!r}: use --STAGE.KEY value")
    result = run_pipeline(args.config, from_stage=args.from_stage, until=args.until, overrides=overrides)
    print(result.summary)
    for d in result.eval_dirs:
        if (d / "summary.md").exists():
            print(f"\nevaluation: {d / 'summary.md'}")
    return 0
