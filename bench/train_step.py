"""DPO+SFT step time and peak memory: TRL's DPOTrainer vs a fair two-row baseline vs prefix sharing.

Variants, all real trainers stepping on the same collated batches (``training_step`` + grad-norm
clip + AdamW step, as the Trainer loop does):

  (a) ``trl``   : ``trl.DPOTrainer`` as shipped (two rows per pair; on CPU its fused head scores every
                  position, prompt included)
  (b) ``base``  : two rows per pair, LM head only at judgment positions (``PrefixSharedDPOTrainer``
                  with ``share_prefix=False``): the fair baseline for prefix sharing alone
  (c) ``ours``  : ``PrefixSharedDPOTrainer`` (prompt computed once, head only at judgment positions)

Model: a random Qwen2 (``--shape``, bench/_models.py; on CPU h256: hidden 256, intermediate 1024, 4
layers, 8 heads, 2 KV heads, vocab 2048, SDPA, fp32), or ``--model PATH`` (e.g. SmolLM2 from ``conj
real-model``, Con-J shapes by default); ``--dtype bfloat16`` steps under the accelerator's autocast as
the Trainer loop does. Reference = the initial weights, policy perturbed. Timings: one process, rounds
interleaved with a rotating order, 1 warm-up round, median of the measured rounds and their spread
((max - min) / median). Peak memory on CPU: each variant in its own fresh subprocess (2 steps),
peak RSS over the steps (``VmHWM`` restarted after set-up; ``ru_maxrss`` where that is refused); "step
memory" is that peak minus the RSS after set-up (libraries, both models, batch: ~640 MB, of which ~555
MB is importing torch/transformers/trl). Prints the padding share of random vs
length-grouped batches on a synthetic Con-J length mix.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_step.py [--rounds 5 --threads 1 --pairs 2 --cases ...]

``--device cuda`` (bench/gpu_check.sh runs it): the Qwen2-1.5B shape by default, weights in the run's
dtype (bf16, as the recipes load them), gradient checkpointing (non-reentrant, switched on and the
model prepared as ``Trainer.train()`` does), fused AdamW, 4K-token cases. Memory there is measured in
the one process with ``torch.cuda.max_memory_allocated``: set-up = tensors a variant's trainer added,
step memory = its AdamW states + the most a measured step allocated on top of what was held before it.

Throughput ratios are the median over rounds of each round's (a)/(c) time ratio (the machine is
shared; steps of one round run back to back); the ratio of the medians is printed too. Last lines:
on CUDA ``MFU against the <GPU> bf16 peak (N TFLOP/s): N%``; then ``share of same-process GEMM
FLOP/s (dtype): N%`` (model FLOPs per step, :func:`step_flops`, over the GEMM rate measured in this
process at the same dtype and threads: 1024^3 on CPU, 8192^3 on CUDA), then ``ratio vs TRL
DPOTrainer: N.NNx``, the smaller over the cases run. ``--clock cpu`` times process CPU seconds (one
thread: steady under load). ``--time-limit S`` measures fewer rounds rather than run past S seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import _device  # bench/ is on sys.path when run as a script
from _models import SHAPES, random_qwen2

VARIANTS = ("trl", "base", "ours")
# (prompt, chosen, rejected) per pair.
CASES = {
    "equal 1024/200/200": [(1024, 200, 200), (1024, 200, 200)],
    "unequal": [(1024, 200, 140), (900, 170, 230)],
    # Con-J's shapes: a judge prompt with two answers (~600 tokens), judgments of 100-200 tokens.
    "con-j 600/150": [(600, 150, 150), (640, 120, 180)],
    # GPU real shapes: 4K tokens per pair (the paper's max_length), equal and unequal judgments.
    "4k 3072/512/512": [(3072, 512, 512)],
    "4k unequal": [(3072, 512, 320), (2900, 380, 512)],
}
# The DPO+SFT objective every benchmark trainer steps (Con-J's loss types; the values only set the work).
DPO_ARGS = {"report_to": "none", "save_strategy": "no", "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.1],
            "beta": 0.1, "max_length": None, "learning_rate": 1e-6}
# Which cases run by default: on CPU for the random model and for a --model folder (real shapes are
# slow there); on CUDA for either.
DEFAULT_CASES = {"random": ("equal 1024/200/200", "unequal"), "model": ("con-j 600/150",),
                 "cuda": ("4k 3072/512/512", "4k unequal")}
# How the model line names each random shape.
SHAPE_LABELS = {"h256": "h256 x4", "qwen2-1.5b": "Qwen2-1.5B-shaped (h1536 x28, vocab 151936)",
                "tiny": "h128 x2"}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default=None, help="comma-separated names from CASES (default: by model)")
    ap.add_argument("--model", default=None,
                    help="a causal-LM folder (e.g. `conj real-model` output) instead of the random Qwen2")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="bfloat16 = bf16 autocast, as training runs it (weights fp32 on CPU, bf16 on CUDA)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--shape", choices=tuple(SHAPES), default=None,
                    help="the random model's shape (default h256 on CPU, qwen2-1.5b on CUDA; unused with --model)")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="non-reentrant activation checkpointing, model prepared as Trainer.train() does "
                         "(default: on for CUDA, off for CPU)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds for the whole run: measure fewer rounds (at least 1) rather than run past it")
    ap.add_argument("--pairs", type=int, default=2, help="pairs per batch (each case's list is repeated)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu = process CPU time: with one thread, steady under other load on the machine")
    ap.add_argument("--no-memory", action="store_true",
                    help="skip the per-variant memory subprocesses (CPU; CUDA reads memory in-process)")
    ap.add_argument("--memory-child", nargs=3, metavar=("VARIANT", "CASE", "TOKENIZER"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if args.shape is None:
        args.shape = "qwen2-1.5b" if cuda else "h256"
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = cuda
    return args


def build_model(seed: int = 0, model_dir: str | None = None, shape: str = "h256", device: str = "cpu",
                dtype: str = "float32") -> Any:
    """The benchmark model: ``model_dir``'s weights (SDPA), else fixed random Qwen2 weights of ``shape``.

    Weights are fp32 (mixed precision) except on CUDA under bf16, where they are bf16 as the recipes
    load them; a GPU model is built or loaded on the GPU directly.
    """
    import torch
    from transformers import AutoModelForCausalLM

    weights = torch.bfloat16 if device == "cuda" and dtype == "bfloat16" else torch.float32
    if model_dir:
        placement = {"device_map": device} if device != "cpu" else {}
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=weights, attn_implementation="sdpa",
                                                    **placement)
    return random_qwen2(SHAPES[shape], seed=seed, dtype=weights, device=device)


def case_pairs(case: str, n_pairs: int, cases: dict[str, list[tuple[int, int, int]]] = CASES
               ) -> list[tuple[int, int, int]]:
    """The case's (P, C, R) list repeated to ``n_pairs`` pairs."""
    base = cases[case]
    return [base[i % len(base)] for i in range(n_pairs)]


def make_batch(pairs: list[tuple[int, int, int]], pad_id: int, vocab: int = 2048, *,
               id_cap: int | None = 2048) -> dict[str, Any]:
    """TRL-collated batch of random token ids with the given lengths, in 3..min(vocab, id_cap)-1 (the
    tokenizer's special ids stay out)."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    gen = torch.Generator().manual_seed(1)
    high = vocab if id_cap is None else min(vocab, id_cap)

    def ids(n: int) -> list[int]:
        return torch.randint(3, high, (n,), generator=gen).tolist()

    examples = [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)} for p, c, r in pairs]
    return DataCollatorForPreference(pad_token_id=pad_id)(examples)


def dpo_config(output_dir: Path, **kwargs: Any) -> Any:
    """A ``DPOConfig`` with :data:`DPO_ARGS` and ``kwargs`` (batch size, precision, device, ...)."""
    from trl import DPOConfig

    return DPOConfig(output_dir=str(output_dir), **DPO_ARGS, **kwargs)


def make_trainer(variant: str, workdir: Path, tokenizer_dir: Path, args: argparse.Namespace) -> Any:
    """One trainer with its own policy/reference copies and AdamW (fused on CUDA); with gradient
    checkpointing, set up as ``Trainer.train()`` would (:func:`prepare_like_train`)."""
    cuda = args.device == "cuda"
    config = dpo_config(workdir / variant, per_device_train_batch_size=2, bf16=args.dtype == "bfloat16",
                        use_cpu=not cuda, gradient_checkpointing=args.gradient_checkpointing,
                        **({"optim": "adamw_torch_fused"} if cuda else {}))
    policy, reference = (build_model(0, args.model, args.shape, args.device, args.dtype) for _ in range(2))
    trainer = variant_trainer(variant, policy, reference, config, tokenizer_dir)
    if args.gradient_checkpointing:
        prepare_like_train(trainer)
    return trainer


def prepare_like_train(trainer: Any) -> None:
    """What ``Trainer.train()`` does before its first step, which calling ``training_step`` skips:
    activation checkpointing switched on (transformers 5.24 does it in ``train()``, not in
    ``__init__``), then ``accelerator.prepare`` of model and optimizer (autocast around the forward
    under bf16). The prepared model is left in ``trainer.model_wrapped``; step it with
    ``step(..., autocast=False)``."""
    args = trainer.args
    model = trainer.model
    kwargs = dict(getattr(args, "activation_checkpointing_kwargs", None) or args.gradient_checkpointing_kwargs
                  or {})
    kwargs.pop("every_n_layers", None)
    kwargs.pop("offload", None)
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    trainer.model_wrapped, trainer.optimizer = trainer.accelerator.prepare(model, trainer.optimizer)


def checkpointing_mode(model: Any) -> str:
    """"off", "non-reentrant" or "reentrant" (the decoder layers' setting)."""
    from conj_train.train.prefix_cache import uses_reentrant_checkpointing

    on = getattr(model, "is_activation_checkpointing", None)
    if on is None:
        on = getattr(model, "is_gradient_checkpointing", False)
    if not on:
        return "off"
    return "reentrant" if uses_reentrant_checkpointing(model) else "non-reentrant"


def variant_trainer(variant: str, policy: Any, reference: Any, config: Any, tokenizer_dir: Path) -> Any:
    """The trainer of ``variant`` ("trl", "base" or "ours") over ``policy`` (perturbed here, so the
    losses are not at their starting point) and the frozen ``reference``."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer

    class TwoRowTrainer(PrefixSharedDPOTrainer):
        share_prefix = False

    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(2)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * 0.005)
    # Trainers need a dataset at construction; the benchmark feeds its own collated batches.
    dummy = Dataset.from_list([{"prompt": "a question", "chosen": " yes", "rejected": " no"}])
    cls = {"trl": DPOTrainer, "base": TwoRowTrainer, "ours": PrefixSharedDPOTrainer}[variant]
    trainer = cls(model=policy, ref_model=reference, args=config, train_dataset=dummy,
                  processing_class=AutoTokenizer.from_pretrained(tokenizer_dir))
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the Trainer loop, which we bypass
    return trainer


def step(trainer: Any, batch: dict[str, Any], *, autocast: bool = True) -> float:
    """One optimizer step as the Trainer loop does it (``training_step``, grad-norm clip, AdamW step);
    returns the loss.

    It steps ``trainer.model_wrapped``: the model itself, or the model :func:`prepare_like_train`
    prepared. ``autocast``: enter the accelerator's autocast around the step, as the Trainer loop does
    under bf16 mixed precision; a prepared model has it in its forward already.
    """
    import contextlib

    model = trainer.model_wrapped
    with trainer.accelerator.autocast() if autocast else contextlib.nullcontext():
        loss = trainer.training_step(model, dict(batch))
    trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return float(loss)


def memory_child(variant: str, case: str, tokenizer: str, args: argparse.Namespace) -> None:
    """Set up one variant in this fresh process, run 2 steps, print peak RSS as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(variant, Path(tmp), Path(tokenizer), args)
        batch = make_batch(case_pairs(case, args.pairs), trainer.processing_class.pad_token_id,
                           trainer.model.config.vocab_size)
        # Restart the peak after set-up: loading a checkpoint can pass through more memory than the
        # loaded models hold, which is not the step's. Where that is refused, ru_maxrss covers the whole run.
        restarted = _device.reset_peak_rss()
        setup = _device.rss_mb()
        for _ in range(2):
            step(trainer, batch, autocast=not args.gradient_checkpointing)
        peak = _device.peak_rss_mb() if restarted else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"setup": setup, "peak": peak}))


def tiny_tokenizer_dir(tmp: Path) -> Path:
    """A saved tokenizer (the tiny model's); only its pad id matters, batches are token ids."""
    from conj_train.model_builders.tiny import build_tiny_model

    return build_tiny_model(tmp / "tiny", seed=0)


def padding_report(batch_size: int, n: int = 4096) -> dict[str, float]:
    """Padding share of random vs length-grouped batches on a synthetic Con-J length mix."""
    import random

    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from conj_train.train.prefix_layout import padding_share

    rng = random.Random(0)
    # Judge prompts hold a question and two answers (long tail), judgments are capped at 512.
    triples = [(min(4096, int(rng.lognormvariate(6.8, 0.5))), rng.randint(60, 512), rng.randint(60, 512))
               for _ in range(n)]
    orders = {"random": torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()}
    torch.manual_seed(0)
    orders["grouped"] = get_length_grouped_indices([p + max(c, r) for p, c, r in triples], batch_size)
    out = {}
    for name, order in orders.items():
        batches = [[triples[i] for i in order[k:k + batch_size]] for k in range(0, n, batch_size)]
        out[f"{name} two_row"] = padding_share(batches, "two_row")
        out[f"{name} split"] = padding_share(batches, "split")
    return out


def measure_memory(variant: str, case: str, tokenizer: Path, args: argparse.Namespace) -> dict[str, float]:
    """Run :func:`memory_child` in a fresh interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--pairs", str(args.pairs),
           "--dtype", args.dtype, "--shape", args.shape, *(["--model", args.model] if args.model else []),
           "--gradient-checkpointing" if args.gradient_checkpointing else "--no-gradient-checkpointing",
           "--memory-child", variant, case, str(tokenizer)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    """Interleaved timings, per-variant peak memory, padding shares, ratios."""
    started = time.perf_counter()
    args = parse_args()
    warnings.filterwarnings("ignore")
    if args.memory_child:
        memory_child(*args.memory_child, args)
        return
    cuda = args.device == "cuda"
    if args.cases is None:
        args.cases = ",".join(DEFAULT_CASES["cuda" if cuda else "model" if args.model else "random"])
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case {unknown[0]!r}; cases: {', '.join(map(repr, CASES))}")
    tmp_dir = tempfile.TemporaryDirectory()
    tok_dir = Path(args.model) if args.model else tiny_tokenizer_dir(Path(tmp_dir.name))
    # Children first, while this process is small: a child's ru_maxrss (the fallback) starts from its
    # parent's RSS (vfork/exec keeps the high-water mark). On CUDA the allocator's counters need no child.
    parent = _device.rss_mb()
    nan = {"setup": float("nan"), "peak": float("nan")}
    mem = {case: {v: nan if args.no_memory or cuda else measure_memory(v, case, tok_dir, args)
                  for v in VARIANTS} for case in cases}
    import torch
    from _limits import GEMM_SIZE, bf16_peak_flops, gemm_flops, matmul_parameters

    _device.check(args.device, args.clock)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    gemm = gemm_flops(dtype, device=args.device, clock=clock)
    peak = bf16_peak_flops(_device.name(args.device)) if cuda else None
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()}, "
          f"parent RSS when spawning memory children {parent:.0f} MB")
    print(_device.describe(args.device))
    size = GEMM_SIZE[args.device]
    print(f"model {args.model or 'random Qwen2 ' + SHAPE_LABELS[args.shape]}, {args.dtype}; same-process GEMM "
          f"{size}^3 {args.dtype}: {gemm / 1e9:.0f} GFLOP/s")
    for n_pairs in (2, 8):
        shares = padding_report(n_pairs)
        print(f"padding share, batch {n_pairs} pairs: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    ratios, shares, mfus = [], [], []
    print(f"clock: {args.clock}")
    mem_label = "peak GPU memory" if cuda else "peak RSS"
    deadline = started + args.time_limit if args.time_limit else None
    with tmp_dir as tmp:
        trainers, setup_mb = {}, {}
        for v in VARIANTS:
            before = _device.cuda_allocated_mb() if cuda else 0.0
            trainers[v] = make_trainer(v, Path(tmp), tok_dir, args)
            if cuda:
                _device.sync(args.device)
                setup_mb[v] = _device.cuda_allocated_mb() - before
        pad_id = trainers["trl"].processing_class.pad_token_id
        model = trainers["trl"].model
        body, head = matmul_parameters(model)
        optimizer = getattr(trainers["trl"].optimizer, "optimizer", trainers["trl"].optimizer)  # unwrap accelerate's
        print(f"gradient checkpointing: {checkpointing_mode(model)}; optimizer: {type(optimizer).__name__}"
              f"{' (fused)' if optimizer.defaults.get('fused') else ''}")
        state_mb: dict[str, float] = {}  # AdamW states a variant's first step allocated (CUDA)
        for case_index, case in enumerate(cases):
            pairs = case_pairs(case, args.pairs)
            batch = make_batch(pairs, pad_id, model.config.vocab_size)
            if cuda:
                batch = {k: v.to(args.device) if hasattr(v, "to") else v for k, v in batch.items()}
            # Each case gets an equal part of the time left.
            case_end = None if deadline is None else \
                time.perf_counter() + (deadline - time.perf_counter()) / (len(cases) - case_index)
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            transient: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
            losses: dict[str, float] = {}
            for rnd in range(args.rounds + 1):
                round_start = time.perf_counter()
                order = VARIANTS[rnd % 3:] + VARIANTS[:rnd % 3]
                for v in order:
                    if cuda:
                        _device.sync(args.device)
                        held = _device.cuda_allocated_mb()
                        _device.cuda_reset_peak()
                    start = clock()
                    loss = step(trainers[v], batch, autocast=not args.gradient_checkpointing)
                    _device.sync(args.device)
                    elapsed = clock() - start
                    if cuda:
                        state_mb.setdefault(v, _device.cuda_allocated_mb() - held)
                        if rnd:
                            transient[v] = max(transient[v], _device.cuda_peak_mb() - held)
                    if rnd == 0:
                        losses[v] = loss
                    else:
                        times[v].append(elapsed)
                last_round = time.perf_counter() - round_start
                if case_end is not None and rnd >= 1 and rnd < args.rounds and \
                        time.perf_counter() + last_round > case_end:
                    print(f"time limit: {rnd} of {args.rounds} rounds measured for case {case}")
                    break
            if cuda:
                mem[case] = {v: {"setup": setup_mb[v], "peak": setup_mb[v] + state_mb[v] + transient[v]}
                             for v in VARIANTS}
            med = {v: statistics.median(times[v]) for v in VARIANTS}
            print(f"\ncase {case}: pairs {pairs}, first-step loss " +
                  ", ".join(f"{v} {losses[v]:.6f}" for v in VARIANTS))
            for v in VARIANTS:
                m = mem[case][v]
                spread = (max(times[v]) - min(times[v])) / med[v]
                print(f"  {v:5s} {med[v]:7.3f} s/step (rounds {', '.join(f'{t:.2f}' for t in times[v])}; "
                      f"spread {spread:.0%})  {mem_label} {m['peak']:.0f} MB, step memory "
                      f"{m['peak'] - m['setup']:.0f} MB")
            # Throughput ratios: median over rounds of the same-round ratio. The three steps of a round
            # run back to back, so a change in the background load hits them alike.
            round_a = [t / o for t, o in zip(times["trl"], times["ours"], strict=True)]
            round_b = [t / o for t, o in zip(times["base"], times["ours"], strict=True)]
            speed_a, speed_b = statistics.median(round_a), statistics.median(round_b)
            print(f"  ratio of medians: trl/ours {med['trl'] / med['ours']:.2f}x, "
                  f"base/ours {med['base'] / med['ours']:.2f}x; per-round trl/ours {min(round_a):.2f}-"
                  f"{max(round_a):.2f}x, base/ours {min(round_b):.2f}-{max(round_b):.2f}x")
            ours_m, trl_m, base_m = (mem[case][v] for v in ("ours", "trl", "base"))
            total = ours_m["peak"] / trl_m["peak"]
            step_mem = (ours_m["peak"] - ours_m["setup"]) / (trl_m["peak"] - trl_m["setup"])
            print(f"  ours vs trl: {speed_a:.2f}x throughput, {total:.2f}x {mem_label}, "
                  f"{step_mem:.2f}x step memory; ours vs base: {speed_b:.2f}x throughput, "
                  f"{ours_m['peak'] / base_m['peak']:.2f}x {mem_label}")
            print(f"  goals: >=2.0x trl {_verdict(speed_a >= 2.0)}, >=1.4x base {_verdict(speed_b >= 1.4)}, "
                  f"<=0.6x trl memory: {mem_label} {_verdict(total <= 0.6)}, "
                  f"step memory {_verdict(step_mem <= 0.6)}")
            flops = step_flops(pairs, body, head, model.config)
            share = flops / med["ours"] / gemm
            print(f"  model FLOPs per step {flops / 1e12:.2f} T (policy fwd+bwd + reference fwd over the "
                  f"distinct tokens, head at judgment tokens, causal attention); ours "
                  f"{flops / med['ours'] / 1e9:.0f} GFLOP/s = {share:.1%} of the GEMM rate, trl "
                  f"{flops / med['trl'] / gemm:.1%} (same FLOPs, so the same work)")
            if cuda:
                mfu = float("nan") if peak is None else flops / med["ours"] / peak
                print(f"  MFU (same FLOPs, no recompute counted): ours {mfu:.1%}, trl "
                      f"{float('nan') if peak is None else flops / med['trl'] / peak:.1%}")
                mfus.append(mfu)
            stats = getattr(trainers["ours"], "prefix_sharing_stats", None)
            if stats is not None:
                print("  prefix sharing (ours): " + ", ".join(
                    f"{k} shared {s.shared}/fallback {s.fallback}" + (f" {s.reasons}" if s.reasons else "")
                    for k, s in stats().items()))
            ratios.append(speed_a)
            shares.append(share)
    print(f"load average at end {os.getloadavg()}")
    if cuda:
        name = _device.name(args.device)
        print(f"MFU against the {name} bf16 peak ({peak / 1e12:.0f} TFLOP/s): {min(mfus):.1%}" if peak else
              f"MFU against the {name} bf16 peak: n/a (unknown GPU: set PEAK_TFLOPS)")
    print(f"share of same-process GEMM FLOP/s ({args.dtype}): {min(shares):.1%}")
    print(f"ratio vs TRL DPOTrainer: {min(ratios):.2f}x")


def step_flops(pairs: list[tuple[int, int, int]], body: int, head: int, config: Any) -> float:
    """The FLOPs a DPO step needs for ``pairs``: what must be computed, whatever the implementation.

    Per distinct token (prompt once, then each judgment) the body's matmuls; the LM head only where a
    log-prob is scored (judgment tokens); causal attention scores and values (prompt over itself,
    each judgment over the prompt and its own earlier tokens). Policy forward + backward = 3x the
    forward, plus the reference model's forward: 4 forwards in all.
    """
    width = config.num_attention_heads * getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
    forward = 0.0
    for p, c, r in pairs:
        forward += 2 * body * (p + c + r) + 2 * head * (c + r)
        pairs_attended = p * p / 2 + c * (p + c / 2) + r * (p + r / 2)
        forward += 4 * width * config.num_hidden_layers * pairs_attended
    return 4 * forward


if __name__ == "__main__":
    main()
