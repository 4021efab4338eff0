"""The launch and the hardware a training run meets: process count, DeepSpeed, CUDA or CPU.

Two steps, kept apart so that building the arguments changes nothing outside them:

* :func:`set_up_machine` is called once per process by the stage entries
  (``conj_train.cli.train`` / ``train_rm``: ``set_up_training``) **before** the arguments are built, because building a
  ``TrainingArguments`` creates the distributed state (and under DeepSpeed runs its
  ``init_distributed``). Without CUDA it prepares DeepSpeed's CPU backend (``DS_ACCELERATOR=cpu``,
  the shared-memory op build skipped: :func:`skip_deepspeed_shm_build`) and, when several
  processes share the cores, one torch thread per process.
* :func:`adapt_to_machine` only adjusts argument *values* (gradient accumulation for the process
  count, fp32 or bf16, ``use_cpu``, gloo); the training configs call it from ``__post_init__``,
  before TRL/transformers validate them.

With CUDA neither does more than the gradient accumulation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError


def world_size() -> int:
    """Number of processes of this launch (``WORLD_SIZE`` from accelerate launch / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def uses_deepspeed(args: Any = None) -> bool:
    """Whether this launch trains under DeepSpeed: ``deepspeed`` set in the arguments, or an
    ``accelerate launch`` with a DeepSpeed config (``ACCELERATE_USE_DEEPSPEED``)."""
    return bool(getattr(args, "deepspeed", None)) or os.environ.get("ACCELERATE_USE_DEEPSPEED",
                                                                      "").lower() == "true"


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matmul instructions (AVX512-BF16 or AMX-BF16; Linux flags).

    torch's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes for plain
    AVX512, where bf16 is emulated and slower than fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def skip_deepspeed_shm_build() -> None:
    """Stop DeepSpeed's CPU backend from JIT-compiling its shared-memory op (about a minute, first run).

    Collectives then go through plain gloo. ``import deepspeed.comm.torch as m`` would bind the
    torch package (``deepspeed.comm`` re-exports it), so the module is patched through sys.modules.
    """
    import importlib

    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # type: ignore[attr-defined]


def asks_for_deepspeed(argv: Sequence[str]) -> bool:
    """Whether ``--deepspeed`` is given on the command line or set in the ``--config`` recipe."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--deepspeed="):
            return bool(arg.partition("=")[2])
        if arg == "--deepspeed" and i + 1 < len(argv):
            return bool(argv[i + 1])
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        recipe = Path(argv[argv.index("--config") + 1])
        if recipe.is_file():
            from conj_train.config.values import read_yaml

            return bool(read_yaml(recipe).get("deepspeed"))
    return False


def set_up_machine(argv: Sequence[str] | None = None, *, deepspeed: bool | None = None) -> None:
    """Prepare this process for training; call it before building the training arguments.

    ``argv`` (default ``sys.argv[1:]``) is the recipe + overrides the arguments will be parsed from,
    read here only for ``deepspeed``; ``deepspeed`` overrides that reading. With CUDA nothing is done.
    """
    import torch

    if torch.cuda.is_available():
        return
    if deepspeed is None:
        deepspeed = uses_deepspeed() or asks_for_deepspeed(sys.argv[1:] if argv is None else argv)
    if deepspeed:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        skip_deepspeed_shm_build()
    if world_size() > 1:
        torch.set_num_threads(1)  # processes sharing CPU cores slow each other down with more


def adapt_to_machine(args: Any) -> list[str]:
    """Adjust training argument values to the launch and hardware, before they are validated; returns notes.

    ``global_batch_size`` sets gradient accumulation for the process count. Without CUDA: fp32, or
    bf16 autocast when ``bf16: true`` is asked and the CPU has bf16 instructions (not under DeepSpeed);
    under DeepSpeed ``use_cpu=False`` + gloo (ZeRO on CPU needs both, and :func:`set_up_machine`);
    otherwise ``use_cpu=True``, which with several processes is accelerate's MULTI_CPU DDP over gloo
    (``use_cpu=False`` there would leave each process training alone). Reads the environment, changes
    nothing outside ``args``.
    """
    notes: list[str] = []
    world = world_size()
    gbs = getattr(args, "global_batch_size", None)
    if gbs:
        per_step = args.per_device_train_batch_size * world
        if gbs % per_step:
            raise ConjError(f"global_batch_size {gbs} must be a multiple of per_device_train_batch_size x "
                            f"processes = {args.per_device_train_batch_size} x {world} = {per_step}")
        args.gradient_accumulation_steps = gbs // per_step
        notes.append(f"gradient_accumulation_steps={args.gradient_accumulation_steps} "
                     f"(global batch {gbs} over {world} process(es))")
    import torch

    if torch.cuda.is_available():
        return notes
    deepspeed = uses_deepspeed(args)
    if args.bf16 is True and not args.fp16 and not deepspeed and cpu_has_fast_bf16():
        # bf16 autocast over fp32 weights: on AVX512-BF16 / AMX cores bf16 matmuls run ~4x fp32.
        notes.append("no CUDA: bf16 mixed precision on CPU (the processor has bf16 instructions)")
    elif args.bf16 is not False or args.fp16:
        # Without bf16 instructions bf16 on CPU is ~3x slower than fp32, and DeepSpeed on CPU cannot
        # use it (it needs use_cpu=False); an unset bf16 (TRL's default "if available") means fp32.
        args.bf16, args.fp16 = False, False
        notes.append("no CUDA: fp32 instead of bf16" + ("" if cpu_has_fast_bf16() else
                                                         " (no bf16 instructions on this CPU)"))
    if deepspeed:
        args.use_cpu = False
        args.ddp_backend = args.ddp_backend or "gloo"
        notes.append("no CUDA: DeepSpeed on CPU (gloo, use_cpu=False, shm op build skipped)")
    else:
        args.use_cpu = True
        if world > 1:
            notes.append("no CUDA: DDP over gloo")
    return notes


@contextmanager
def main_process_first() -> Iterator[None]:
    """Global main process first, then each node's local main, then the rest (cache writes once)."""
    from accelerate import PartialState

    state = PartialState()
    with state.main_process_first(), state.local_main_process_first():
        yield
