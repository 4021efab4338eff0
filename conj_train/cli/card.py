"""``conj card``: write a ``conj eval`` run's results into a trained model's card (README.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``card`` subcommand."""
    p = sub.add_parser(
        "card",
        help="add an evaluation's results to a trained judge's model card (model-index entries)",
        description="Read EVAL_DIR/metrics.json (a finished `conj eval` run) and write the results of the "
        "model evaluated from MODEL_DIR into MODEL_DIR/README.md: model-index entries in the metadata "
        "(huggingface_hub's EvalResult) and the card's evaluation table. `conj run` does this itself "
        "after its eval stage.",
    )
    p.add_argument("model_dir", help="the trained model folder (holding the README.md card)")
    p.add_argument("--eval", dest="eval_dir", required=True, help="the `conj eval` output folder")
    p.add_argument("--name", help="the model's name in that run (default: the one whose path is MODEL_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Add the results and print how many entries the card holds."""
    from pathlib import Path

    from conj_train.errors import ConjError
    from conj_train.io import read_json
    from conj_train.train.card import add_eval_results

    metrics_path = Path(args.eval_dir) / "metrics.json"
    if not metrics_path.is_file():
        raise ConjError(f"{args.eval_dir}: no metrics.json (not a finished `conj eval` run)")
    name = args.name
    if name is None:
        here = Path(args.model_dir).resolve()
        names = [n for n, m in read_json(metrics_path)["models"].items()
                 if Path(str(m.get("path", ""))).resolve() == here]
        if len(names) != 1:
            raise ConjError(f"{args.eval_dir} evaluated {len(names)} models from {args.model_dir}; "
                            "name one with --name")
        name = names[0]
    results = add_eval_results(args.model_dir, args.eval_dir, name)
    print(f"{Path(args.model_dir) / 'README.md'}: {len(results)} evaluation results ({name})")
    return 0
