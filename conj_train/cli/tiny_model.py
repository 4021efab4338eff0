"""``conj tiny-model``: build the offline tiny Qwen2 model used by tests, demos and benchmarks."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tiny-model`` subcommand."""
    p = sub.add_parser(
        "tiny-model",
        help="build a random-weight tiny Qwen2 model + offline tokenizer",
        description="Build, fully offline, a random-weight Qwen2 causal LM and a byte-level BPE "
        "tokenizer with the Qwen2 ChatML chat template. Deterministic for a seed.",
    )
    p.add_argument("out_dir", help="folder to write (created if missing)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads (default 2)")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the model and print where it went."""
    from conj_train.errors import ConjError
    from conj_train.model_builders.tiny import build_tiny_model
    from conj_train.runs import check_output_dir

    check_output_dir(args.out_dir, what="out_dir")
    try:
        out = build_tiny_model(
            args.out_dir, hidden=args.hidden, layers=args.layers, heads=args.heads,
            kv_heads=args.kv_heads, vocab_size=args.vocab_size, seed=args.seed,
        )
    except ValueError as e:
        raise ConjError(str(e)) from e
    print(f"tiny model written to {out}")
    return 0
