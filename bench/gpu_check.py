"""GPU check: DPO+SFT step throughput and MFU (TRL vs prefix sharing) and sampling throughput, one GPU.

The GPU counterpart of ``bench/train_step.py`` and ``bench/sample.py``, for a single H100/H200 with no
network (``bench/gpu_check.sh`` installs what that machine lacks and runs this). A random-weight
Qwen2 with Qwen2-1.5B's shapes (hidden 1536, intermediate 8960, 28 layers, 12 heads / 2 KV heads, vocab
151936, RoPE theta 1e6, tied embeddings) is built directly on the GPU in bf16; batches are random token
ids, so no tokenizer or weights are downloaded (the tiny offline tokenizer of ``conj_train.tiny`` serves
as the trainers' ``processing_class``: only its pad/eos ids are used).

Sections, each guarded (a failure is recorded and the next section runs) and time-boxed:

  DPO+SFT step (``loss_type=["sigmoid", "sft"]``, weights [1, 0.1], beta 0.1, gradient checkpointing,
  fused AdamW, bf16), 4K tokens per pair (prompt 3,072 + chosen 512 + rejected 512; then an unequal
  case), real trainers stepping on TRL-collated batches (``training_step`` + grad-norm clip + AdamW
  step, as the Trainer loop does), one variant at a time so peak memory is per variant:
    (a) ``trl``  : ``trl.DPOTrainer`` as shipped (two rows per pair; on CUDA its head scores only
                   judgment positions)
    (b) ``base`` : ``PrefixSharedDPOTrainer`` with ``share_prefix=False`` (two rows, same code path)
    (c) ``ours`` : ``PrefixSharedDPOTrainer`` (prompt computed once)
  and, if ``flash_attn`` imports, (a) again with ``flash_attention_2`` (prefix sharing needs a 4D mask,
  so (c) stays on SDPA: that row compares ours against TRL's fastest attention).

  Sampling: ``HFEngine`` (``conj_train/engines/hf.py``; the model handed over in memory instead of
  loaded from a folder) packed (``batch_tokens``: all prompts in one forward, masked holes) and per
  request (the default), vs ``model.generate(num_return_sequences=n)`` per prompt and over all prompts
  (left-padded); 4 prompts of 1,440-1,560 tokens, n=8, 256 new tokens, T=1.0 with Con-J's top-p
  0.95, top-k 50, repetition penalty 1.2; end-of-sequence disabled everywhere so every sample runs the
  full length (checked).

Counting. "TRL tokens" per pair = 2 x (P + max(C, R)) (what TRL's two-row layout processes, padding
within the pair included); tokens/s of every variant uses that numerator, so tokens/s ratios are step
time ratios; "useful tokens" = P + C + R. MFU = model FLOPs per step / (step time x peak dense bf16
FLOP/s), with model FLOPs on the standard convention 6N (policy forward + backward) + 2N (reference
forward) per processed token, N = all parameters (the tied embedding counted once, as the LM head),
no recomputation of gradient checkpointing, no attention term, and the LM head counted at every
token although both trainers score only judgment positions. Processed tokens: TRL tokens for (a)/(b),
useful tokens for (c); ``mfu_trl_equiv`` divides (a)'s FLOPs by the variant's time. ``mfu_attn`` adds
causal attention, 4 x hidden FLOPs per (query, key) pair per layer and forward, x4 (3 policy + 1
reference), on each layout's real tokens. Peak: H100 SXM / H200 989 TFLOP/s, H100 PCIe 756 (dense
bf16 specs; the ``PEAK_TFLOPS`` environment variable overrides); null on CPU or unknown GPUs.

    python bench/gpu_check.py --device cuda [--seconds-budget 360]
    OMP_NUM_THREADS=1 .venv/bin/python bench/gpu_check.py --device cpu --tiny   # smoke test, < 2 min

Results go to ``$OUT/gpu_check.json`` (``--out``; rewritten after every section). Last line:
``ratio vs TRL DPOTrainer (GPU): N.NNx`` = (a)'s step time / (c)'s, the smaller over the cases run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# bench/ is on sys.path when run as a script: the builders shared with the CPU benchmark.
from train_step import (
    VARIANTS,
    case_pairs,
    dpo_config,
    make_batch,
    random_qwen2,
    step,
    tiny_tokenizer_dir,
    variant_trainer,
)

QWEN2_1_5B = {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
              "num_attention_heads": 12, "num_key_value_heads": 2}
TINY = {"vocab_size": 2048, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}
# (prompt, chosen, rejected) per pair; the list is repeated to --pairs pairs.
CASES = {
    "equal": [(3072, 512, 512)],
    "unequal": [(3072, 512, 320), (2900, 380, 512)],
}
TINY_CASES = {
    "equal": [(256, 64, 64)],
    "unequal": [(256, 64, 40), (230, 50, 64)],
}
# Dense bf16 tensor-core peaks (no sparsity), FLOP/s.
PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12))
# Share of the budget each section may spend measuring (set-up and one measurement always run).
SHARES = {"dpo equal": 0.2, "generation": 0.45, "dpo unequal": 0.15, "dpo flash_attention_2": 0.1}

NOTES = {
    "tokens_per_s": "TRL tokens (2 x (P + max(C, R)) per pair) / step time, for every variant",
    "useful_tokens_per_s": "(P + C + R) per pair / step time",
    "mfu": "(6N + 2N) x processed tokens / (step time x peak): TRL tokens for trl/base, useful tokens for "
           "ours; no recompute, no attention, LM head counted at every token",
    "mfu_attn": "mfu plus causal attention: 4 x hidden FLOPs per (q, k) pair per layer per forward, x4",
    "mfu_trl_equiv": "trl's (6N + 2N) x TRL tokens / (this variant's step time x peak)",
    "memory": "setup_gib: allocated after building trainer + models; peak_gib: max allocated over warm-up "
              "and measured steps (AdamW states, created at the first step, included); "
              "step_gib = peak - setup",
}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small shapes for a CPU smoke test")
    ap.add_argument("--seconds-budget", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET", 360)),
                    help="time box for the whole script, imports included (env GPU_CHECK_BUDGET)")
    ap.add_argument("--pairs", type=int, default=2, help="pairs per DPO batch")
    ap.add_argument("--steps", type=int, default=5, help="measured DPO steps per variant (at most)")
    ap.add_argument("--warmup", type=int, default=2, help="DPO warm-up steps per variant")
    ap.add_argument("--gen-prompts", type=int, default=4)
    ap.add_argument("--gen-prompt-tokens", type=int, default=None, help="default 1500 (tiny: 128)")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 256 (tiny: 16)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--gen-rounds", type=int, default=3, help="measured sampling rounds (at most)")
    ap.add_argument("--sections", default=",".join(SHARES),
                    help="comma-separated names from: " + ", ".join(SHARES))
    ap.add_argument("--out", default=None, help="JSON path (default $OUT/gpu_check.json, else bench/out/)")
    return ap.parse_args()


class Budget:
    """Wall-clock time box: the whole run, and a share of it per section."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.total = seconds
        self.section_end = self.start + seconds

    def used(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left in the whole run."""
        return self.total - self.used()

    def open_section(self, share: float) -> None:
        """Start a section that may measure for ``share`` of the budget (never past the end)."""
        now = time.perf_counter()
        self.section_end = min(self.start + self.total, now + share * self.total)

    def section_left(self) -> float:
        """Seconds left in the current section."""
        return self.section_end - time.perf_counter()


def log(message: str) -> None:
    """Progress line, flushed (the shell script tees the log)."""
    print(message, flush=True)


def version_of(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def importable(module: str) -> bool:
    """Whether ``module`` imports (import errors of any kind count as no)."""
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s for the device, from ``PEAK_TFLOPS`` or the known names."""
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"]) * 1e12
    for key, value in PEAKS:
        if all(part in device_name for part in key.split()):
            return value
    return None


def env_info(device: str) -> dict[str, Any]:
    """Versions, device, attention kernels available."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        **{name: version_of(name) for name in ("transformers", "trl", "datasets", "accelerate", "peft")},
        # A truthy flash_attn entry enables the flash_attention_2 section, so it must import.
        "flash_attn": (version_of("flash-attn") or version_of("flash_attn") or "unknown version")
        if importable("flash_attn") else None,
        "vllm": version_of("vllm") if importlib.util.find_spec("vllm") else None,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=torch.cuda.get_device_name(0), memory_gib=gib(props.total_memory),
                    sms=props.multi_processor_count)
    else:
        info.update(device_name=f"CPU ({platform.processor() or platform.machine()}), "
                                f"{torch.get_num_threads()} thread(s)")
    info["peak_flops"] = peak_flops(info["device_name"]) if device == "cuda" else None
    return info


def build_model(tiny: bool, attn: str, dtype: Any, device: str, seed: int = 0) -> Any:
    """Qwen2-1.5B's (or the tiny) shapes with random weights, built in place on ``device`` (no CPU copy
    of 1.5B parameters)."""
    return random_qwen2(TINY if tiny else QWEN2_1_5B, seed=seed, attn=attn, dtype=dtype, device=device,
                        max_position_embeddings=32768, rope_theta=1e6)


def sync(device: str) -> None:
    """Wait for queued GPU work (timings must cover it)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    """Drop cached blocks after a variant's objects are gone."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def gib(nbytes: float) -> float:
    """Bytes to GiB, rounded."""
    return round(nbytes / 2**30, 2)


# ---------------------------------------------------------------------------------------------- DPO


def make_trainer(variant: str, attn: str, args: argparse.Namespace, workdir: Path,
                 tokenizer_dir: Path) -> Any:
    """One trainer with its own policy (perturbed) and reference (the initial weights) and fused AdamW."""
    import torch

    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    policy = build_model(args.tiny, attn, dtype, args.device)
    reference = copy.deepcopy(policy)
    config = dpo_config(workdir / variant, per_device_train_batch_size=args.pairs, bf16=cuda, use_cpu=not cuda,
                        gradient_checkpointing=True, optim="adamw_torch_fused" if cuda else "adamw_torch")
    trainer = variant_trainer(variant, policy, reference, config, tokenizer_dir)
    prepare_like_train(trainer)
    return trainer


def prepare_like_train(trainer: Any) -> None:
    """What ``Trainer.train()`` does before its first step, which calling ``training_step`` skips:
    activation checkpointing switched on (transformers 5.24 does it in ``train()``, not in
    ``__init__``), then ``accelerator.prepare`` of model and optimizer (bf16 autocast around the
    forward). The prepared model is left in ``trainer.model_wrapped``."""
    args = trainer.args
    model = trainer.model
    if args.gradient_checkpointing:
        kwargs = dict(getattr(args, "activation_checkpointing_kwargs", None)
                      or args.gradient_checkpointing_kwargs or {})
        kwargs.pop("every_n_layers", None)
        kwargs.pop("offload", None)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    trainer.model_wrapped, trainer.optimizer = trainer.accelerator.prepare(model, trainer.optimizer)


def dpo_step(trainer: Any, batch: dict[str, Any]) -> float:
    """One optimizer step of a trainer set up by :func:`make_trainer`; returns the loss."""
    return step(trainer, batch, autocast=False)  # the prepared model's forward has its own autocast


def checkpointing_mode(model: Any) -> str:
    """"off", "non-reentrant" or "reentrant" (the decoder layers' setting)."""
    from conj_train.train.prefix_cache import uses_reentrant_checkpointing

    on = getattr(model, "is_activation_checkpointing", None)
    if on is None:
        on = getattr(model, "is_gradient_checkpointing", False)
    if not on:
        return "off"
    return "reentrant" if uses_reentrant_checkpointing(model) else "non-reentrant"


def causal_pairs(n: int) -> int:
    """(query, key) pairs of causal attention over ``n`` tokens."""
    return n * (n + 1) // 2


def flop_counts(pairs: list[tuple[int, int, int]], n_params: int, hidden: int, layers: int) -> dict[str, Any]:
    """Tokens and model FLOPs per step for the two-row and the shared layout (module docstring)."""
    trl_tokens = sum(2 * (p + max(c, r)) for p, c, r in pairs)
    useful = sum(p + c + r for p, c, r in pairs)
    two_row_attn = sum(causal_pairs(p + c) + causal_pairs(p + r) for p, c, r in pairs)
    shared_attn = sum(causal_pairs(p) + (c + r) * p + causal_pairs(c) + causal_pairs(r) for p, c, r in pairs)
    attn_flops = 16 * hidden * layers  # per (q, k) pair: 4h per forward, x3 policy + x1 reference
    return {
        "trl_tokens": trl_tokens, "useful_tokens": useful,
        "two_row_flops": 8 * n_params * trl_tokens, "shared_flops": 8 * n_params * useful,
        "two_row_attn_flops": attn_flops * two_row_attn, "shared_attn_flops": attn_flops * shared_attn,
    }


def measure_variant(trainer: Any, pairs: list[tuple[int, int, int]], args: argparse.Namespace, budget: Budget,
                    share: float, row: dict[str, Any]) -> tuple[list[float], int, int, int]:
    """Warm-up and timed steps of a set-up trainer; fills ``row``, returns (step times, N, hidden, layers)."""
    import torch

    cuda = args.device == "cuda"
    model = trainer.model
    cfg = model.config
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # inside accelerate's wrapper
    batch = make_batch(pairs, trainer.processing_class.pad_token_id, cfg.vocab_size, id_cap=None)
    row.update(gradient_checkpointing=checkpointing_mode(model), optimizer=type(optimizer).__name__,
               optimizer_fused=bool(optimizer.defaults.get("fused")), model_dtype=str(model.dtype),
               batch_shape=list(batch["input_ids"].shape))
    if cuda:
        sync(args.device)
        row["setup_gib"] = gib(torch.cuda.memory_allocated())
        torch.cuda.reset_peak_memory_stats()
    losses = [dpo_step(trainer, batch) for _ in range(max(args.warmup, 1))]
    sync(args.device)
    row["first_loss"] = losses[0]
    budget.open_section(share)
    times: list[float] = []
    while len(times) < args.steps:
        start = time.perf_counter()
        dpo_step(trainer, batch)
        sync(args.device)
        times.append(time.perf_counter() - start)
        # At least two measured steps; then stop when the next one would overrun the section.
        if len(times) >= 2 and budget.section_left() < statistics.median(times):
            break
    if cuda:
        row["peak_gib"] = gib(torch.cuda.max_memory_allocated())
        row["step_gib"] = round(row["peak_gib"] - row["setup_gib"], 2)
    # TRL switches checkpointing off and on around reference passes: what the steps ended with.
    row["gradient_checkpointing_after"] = checkpointing_mode(model)
    stats = getattr(trainer, "prefix_sharing_stats", None)
    if stats is not None:
        row["prefix_sharing"] = {name: {"shared": s.shared, "fallback": s.fallback, "reasons": s.reasons}
                                 for name, s in stats().items()}
    return times, sum(p.numel() for p in model.parameters()), cfg.hidden_size, cfg.num_hidden_layers


def run_variant(variant: str, attn: str, pairs: list[tuple[int, int, int]], args: argparse.Namespace,
                budget: Budget, share: float, tmp: Path, tok_dir: Path, peak: float | None) -> dict[str, Any]:
    """Set up one variant, warm it up, time its steps; returns its row of the results."""
    import torch

    free_memory(args.device)  # here, not in an except block, whose traceback would keep the last models alive
    row: dict[str, Any] = {"attn": attn}
    if args.device == "cuda":
        row["allocated_before_gib"] = gib(torch.cuda.memory_allocated())
    t0 = time.perf_counter()
    trainer = make_trainer(variant, attn, args, tmp, tok_dir)
    row["setup_s"] = round(time.perf_counter() - t0, 1)
    try:
        times, n_params, hidden, layers = measure_variant(trainer, pairs, args, budget, share, row)
    finally:
        with contextlib.suppress(Exception):
            trainer.accelerator.free_memory()
        trainer = None
        free_memory(args.device)
    med = statistics.median(times)
    counts = flop_counts(pairs, n_params, hidden, layers)
    shared = variant == "ours"
    flops = counts["shared_flops" if shared else "two_row_flops"]
    attn_flops = counts["shared_attn_flops" if shared else "two_row_attn_flops"]
    row.update(
        n_params=n_params, s_per_step=round(med, 4), steps=[round(t, 4) for t in times],
        tokens_per_s=round(counts["trl_tokens"] / med),
        useful_tokens_per_s=round(counts["useful_tokens"] / med),
        mfu=None if peak is None else round(flops / (med * peak), 4),
        mfu_attn=None if peak is None else round((flops + attn_flops) / (med * peak), 4),
        mfu_trl_equiv=None if peak is None else round(counts["two_row_flops"] / (med * peak), 4),
    )
    return row


def run_dpo_case(case: str, attn: str, variants: tuple[str, ...], args: argparse.Namespace, budget: Budget,
                 share: float, tok_dir: Path, peak: float | None) -> dict[str, Any]:
    """All variants on one case, one after another (each with its own models: memory peaks per variant)."""
    pairs = case_pairs(case, args.pairs, TINY_CASES if args.tiny else CASES)
    out: dict[str, Any] = {"pairs": pairs, "variants": {}, "errors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            # Each variant gets an equal part of what is left of the section's share.
            part = share / len(variants)
            try:
                row = run_variant(variant, attn, pairs, args, budget, part, Path(tmp), tok_dir, peak)
            except Exception as err:
                out["errors"][variant] = f"{type(err).__name__}: {err}"
                log(f"  {variant}: FAILED {type(err).__name__}: {err}")
                traceback.print_exc()
                continue
            out["variants"][variant] = row
            log(f"  {variant:5s} {attn:18s} {row['s_per_step']:.3f} s/step ({len(row['steps'])} steps), "
                f"{row['tokens_per_s']:,} TRL tok/s, {row['useful_tokens_per_s']:,} useful tok/s, "
                f"peak {row.get('peak_gib', 'n/a')} GiB, MFU {_pct(row['mfu'])} "
                f"(+attn {_pct(row['mfu_attn'])}, TRL-equiv {_pct(row['mfu_trl_equiv'])}), "
                f"first loss {row['first_loss']:.6f}" + _sharing_note(row))
    rows = out["variants"]
    if "trl" in rows and "ours" in rows:
        out["ratio_trl_over_ours"] = round(rows["trl"]["s_per_step"] / rows["ours"]["s_per_step"], 3)
    if "base" in rows and "ours" in rows:
        out["ratio_base_over_ours"] = round(rows["base"]["s_per_step"] / rows["ours"]["s_per_step"], 3)
    if rows.get("trl", {}).get("peak_gib") and rows.get("ours", {}).get("peak_gib"):
        out["peak_memory_ours_over_trl"] = round(rows["ours"]["peak_gib"] / rows["trl"]["peak_gib"], 3)
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _sharing_note(row: dict[str, Any]) -> str:
    stats = row.get("prefix_sharing")
    if not stats:
        return ""
    parts = [f"{name} shared {s['shared']}/fallback {s['fallback']}"
             + (f" {s['reasons']}" if s["reasons"] else "") for name, s in stats.items()]
    return "; " + ", ".join(parts)


# ----------------------------------------------------------------------------------------- sampling


def make_engine(model: Any, tokenizer: Any, ids_by_key: dict[str, list[int]], batch_tokens: int) -> Any:
    """``HFEngine`` around an in-memory model whose prompts are token ids (no folder, no text)."""
    from conj_train.engines.hf import HFEngine

    class IdsEngine(HFEngine):
        def __init__(self) -> None:
            # HFEngine.__init__ loads from a folder; writing 3 GB of random weights to disk buys nothing here.
            self.tokenizer = tokenizer
            self.model = model.eval()
            self.device = str(model.device)
            self.batch_tokens = batch_tokens
            self.stop_token_ids: set[int] = set()  # full-length samples: no stop token

        def prompt_ids(self, request: Any) -> list[int]:
            return ids_by_key[request.key]

    return IdsEngine()


def run_generation(args: argparse.Namespace, budget: Budget, share: float, tok_dir: Path) -> dict[str, Any]:
    """Generated tokens/s of HFEngine (per request, packed) vs ``generate(num_return_sequences=n)``."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    from conj_train.engines.base import GenerationRequest, SamplingParams

    cuda = args.device == "cuda"
    prompt_len = args.gen_prompt_tokens or (128 if args.tiny else 1500)
    new = args.new_tokens or (16 if args.tiny else 256)
    params = SamplingParams(temperature=1.0, max_new_tokens=new)  # Con-J's top-p/top-k/penalty
    model = build_model(args.tiny, "sdpa", torch.bfloat16 if cuda else torch.float32, args.device).eval()
    model.generation_config.eos_token_id = None
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(3)
    # Lengths spread around prompt_len (+-4%), all different, as real judge prompts are.
    spread = max(prompt_len // 25, 1)
    lengths = [prompt_len - spread + (2 * spread * i) // max(args.gen_prompts - 1, 1)
               for i in range(args.gen_prompts)]
    ids = {str(i): torch.randint(3, vocab, (n,), generator=gen).tolist() for i, n in enumerate(lengths)}
    requests = [GenerationRequest(key=k, prompt="", seeds=[1000 * int(k) + j for j in range(args.n)])
                for k in ids]
    per_request = make_engine(model, tokenizer, ids, 0)
    packed = make_engine(model, tokenizer, ids, len(ids) * args.n * (max(lengths) + new))
    # generate's batched layout: left-padded, with the attention mask.
    pad = tokenizer.pad_token_id
    longest = max(lengths)
    all_ids = torch.tensor([[pad] * (longest - len(v)) + v for v in ids.values()], device=args.device)
    all_mask = torch.tensor([[0] * (longest - len(v)) + [1] * len(v) for v in ids.values()],
                            device=args.device)
    singles = [torch.tensor([v], device=args.device) for v in ids.values()]

    def gen_config(max_new: int) -> Any:
        return GenerationConfig(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                                top_k=params.top_k, repetition_penalty=params.repetition_penalty,
                                max_new_tokens=max_new, num_return_sequences=args.n, eos_token_id=None,
                                pad_token_id=tokenizer.pad_token_id)

    def engine_run(engine: Any, reqs: list[Any], p: Any) -> int:
        return sum(g.completion_tokens for g in engine.generate(reqs, p))

    def generate_each(prompts: list[Any], cfg: Any) -> int:
        total = 0
        with torch.inference_mode():
            for row in prompts:
                out = model.generate(row, attention_mask=torch.ones_like(row), generation_config=cfg)
                total += out[:, row.shape[1]:].numel()
        return total

    def generate_batched(rows: Any, mask: Any, cfg: Any) -> int:
        with torch.inference_mode():
            out = model.generate(rows, attention_mask=mask, generation_config=cfg)
        return out[:, rows.shape[1]:].numel()

    def methods(k: int, max_new: int) -> dict[str, Callable[[], int]]:
        """The four methods on the first ``k`` prompts."""
        p = SamplingParams(temperature=1.0, max_new_tokens=max_new)
        cfg = gen_config(max_new)
        reqs = requests[:k]
        return {
            "HFEngine packed (batch_tokens)": lambda: engine_run(packed, reqs, p),
            "HFEngine per request (default)": lambda: engine_run(per_request, reqs, p),
            "generate, one call per prompt": lambda: generate_each(singles[:k], cfg),
            "generate, all prompts batched": lambda: generate_batched(all_ids[:k], all_mask[:k], cfg),
        }

    out: dict[str, Any] = {"prompts": len(ids), "prompt_tokens": lengths, "n": args.n, "new_tokens": new,
                           "sampling": {"temperature": 1.0, "top_p": params.top_p, "top_k": params.top_k,
                                        "repetition_penalty": params.repetition_penalty},
                           "attn": "sdpa", "methods": {}, "errors": {}}
    expected = len(ids) * args.n * new
    warm = methods(min(2, len(ids)), min(8, new))
    full = methods(len(ids), new)
    names = list(full)
    for name in names:  # warm-up: one prompt, a few tokens
        try:
            warm[name]()
        except Exception as err:
            out["errors"][name] = f"{type(err).__name__}: {err}"
            log(f"  {name}: FAILED in warm-up {type(err).__name__}: {err}")
            traceback.print_exc()
    live = [n for n in names if n not in out["errors"]]
    budget.open_section(share)
    results: dict[str, list[float]] = {n: [] for n in live}
    peaks: dict[str, float] = {}
    for rnd in range(args.gen_rounds):
        for name in live[rnd % len(live):] + live[: rnd % len(live)]:
            if name in out["errors"]:
                continue
            torch.manual_seed(rnd)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            try:
                sync(args.device)
                start = time.perf_counter()
                tokens = full[name]()
                sync(args.device)
                wall = time.perf_counter() - start
            except Exception as err:
                out["errors"][name] = f"{type(err).__name__}: {err}"
                log(f"  {name}: FAILED {type(err).__name__}: {err}")
                traceback.print_exc()
                continue
            if tokens != expected:
                out["errors"][name] = f"{tokens} tokens generated, expected {expected}"
                continue
            results[name].append(tokens / wall)
            if cuda:
                peaks[name] = max(peaks.get(name, 0.0), gib(torch.cuda.max_memory_allocated()))
            log(f"  round {rnd + 1} {name:32s} {tokens / wall:10,.0f} tok/s ({wall:.1f} s)")
        # Another round only if it fits in the section.
        round_time = sum(expected / statistics.median(r) for r in results.values() if r)
        if budget.section_left() < round_time:
            break
    for name, runs in results.items():
        if runs and name not in out["errors"]:
            out["methods"][name] = {"tokens_per_s": round(statistics.median(runs)), "rounds": len(runs),
                                    "all": [round(r) for r in runs], "peak_gib": peaks.get(name)}
    m = out["methods"]
    baselines = {k: v["tokens_per_s"] for k, v in m.items() if k.startswith("generate")}
    if baselines:
        best = max(baselines, key=baselines.__getitem__)
        out["faster_generate"] = best
        for key, name in (("ratio_packed_vs_generate", "HFEngine packed (batch_tokens)"),
                          ("ratio_default_vs_generate", "HFEngine per request (default)")):
            if name in m:
                out[key] = round(m[name]["tokens_per_s"] / baselines[best], 3)
    out["vllm"] = ("installed, not benchmarked by this script" if importlib.util.find_spec("vllm")
                   else "not installed: skipped")
    return out


# --------------------------------------------------------------------------------------------- main


@contextlib.contextmanager
def section(name: str, results: dict[str, Any], budget: Budget, min_left: float) -> Iterator[bool]:
    """Run a section unless too little time is left; record its failure instead of stopping."""
    if budget.left() < min_left:
        results["skipped"][name] = f"{budget.left():.0f} s left, needs about {min_left:.0f}"
        log(f"\n== {name}: skipped ({results['skipped'][name]})")
        yield False
        return
    log(f"\n== {name} (at {budget.used():.0f} s)")
    t0 = time.perf_counter()
    try:
        yield True
    except Exception as err:
        results["errors"][name] = f"{type(err).__name__}: {err}"
        log(f"  FAILED {type(err).__name__}: {err}")
        traceback.print_exc()
    results["section_seconds"][name] = round(time.perf_counter() - t0, 1)


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Rewrite the results file (after every section, so a timeout keeps what ran)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(path)


def main() -> None:
    """Header, sections in order of importance, JSON, final ratio line."""
    args = parse_args()
    budget = Budget(args.seconds_budget)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_path = Path(args.out) if args.out else Path(os.environ.get("OUT") or "bench/out") / "gpu_check.json"
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    import trl  # noqa: F401  (imported up front: its import time should not land in a section)

    info = env_info(args.device)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    results: dict[str, Any] = {"env": info, "args": vars(args), "shapes": TINY if args.tiny else QWEN2_1_5B,
                               "dpo": {}, "generation": None, "errors": {}, "skipped": {},
                               "section_seconds": {}, "notes": NOTES}
    log(f"gpu_check: {'tiny' if args.tiny else 'Qwen2-1.5B-shaped'} random model on {info['device_name']}")
    keys = ("python", "torch", "cuda", "transformers", "trl", "datasets", "accelerate", "peft", "flash_attn",
            "vllm")
    log("  " + ", ".join(f"{k} {info[k]}" for k in keys))
    peak = info["peak_flops"]
    log(f"  peak dense bf16 {peak / 1e12:.0f} TFLOP/s" if peak else "  peak FLOP/s unknown: MFU null "
        "(set PEAK_TFLOPS)")
    log(f"  budget {args.seconds_budget:.0f} s, imports took {budget.used():.1f} s")
    tmp = tempfile.TemporaryDirectory()
    tok_dir = tiny_tokenizer_dir(Path(tmp.name))
    # Rough set-up + one measurement per section, to skip a section that cannot finish.
    need = {"dpo equal": 40, "generation": 60, "dpo unequal": 40, "dpo flash_attention_2": 20}
    if args.tiny:
        need = dict.fromkeys(need, 5)
    for name in wanted:
        if name not in SHARES:
            raise SystemExit(f"unknown section {name!r}; expected some of {', '.join(SHARES)}")
        if name == "dpo flash_attention_2" and not (args.device == "cuda" and info["flash_attn"]):
            results["skipped"][name] = "flash_attn not importable" if args.device == "cuda" else "CPU run"
            log(f"\n== {name}: skipped ({results['skipped'][name]})")
            continue
        with section(name, results, budget, need[name]) as go:
            if not go:
                continue
            if name == "generation":
                results["generation"] = run_generation(args, budget, SHARES[name], tok_dir)
                free_memory(args.device)  # the model went out of scope with run_generation
                g = results["generation"]
                for method, row in g["methods"].items():
                    log(f"  {method:32s} {row['tokens_per_s']:10,} tok/s (median of {row['rounds']}), "
                        f"peak {row['peak_gib'] or 'n/a'} GiB")
                if "faster_generate" in g:
                    log(f"  vs {g['faster_generate']}: packed engine "
                        f"{g.get('ratio_packed_vs_generate', float('nan')):.2f}x, default engine "
                        f"{g.get('ratio_default_vs_generate', float('nan')):.2f}x; vLLM: {g['vllm']}")
            elif name == "dpo flash_attention_2":
                results["dpo"][name] = run_dpo_case("equal", "flash_attention_2", ("trl",), args, budget,
                                                    SHARES[name], tok_dir, peak)
            else:
                case = name.split()[1]
                results["dpo"][name] = run_dpo_case(case, "sdpa", VARIANTS, args, budget, SHARES[name],
                                                    tok_dir, peak)
        results["budget_used_s"] = round(budget.used(), 1)
        write_json(out_path, results)
    tmp.cleanup()
    ratios = {k: v["ratio_trl_over_ours"] for k, v in results["dpo"].items() if "ratio_trl_over_ours" in v}
    fa2 = results["dpo"].get("dpo flash_attention_2", {}).get("variants", {}).get("trl")
    ours_eq = results["dpo"].get("dpo equal", {}).get("variants", {}).get("ours")
    if fa2 and ours_eq:
        results["ratio_trl_fa2_over_ours_sdpa"] = round(fa2["s_per_step"] / ours_eq["s_per_step"], 3)
        log("\nTRL + flash_attention_2 vs ours (SDPA), equal case: "
            f"{results['ratio_trl_fa2_over_ours_sdpa']:.2f}x")
    results["ratio_vs_trl"] = min(ratios.values()) if ratios else None
    results["budget_used_s"] = round(budget.used(), 1)
    write_json(out_path, results)
    log(f"\nresults: {out_path}; {len(results['errors'])} section error(s), "
        f"budget used {budget.used():.0f} s of {args.seconds_budget:.0f}")
    for name, ratio in ratios.items():
        log(f"  {name}: trl/ours {ratio:.2f}x")
    if ratios:
        log(f"ratio vs TRL DPOTrainer (GPU): {min(ratios.values()):.2f}x")
    else:
        log("ratio vs TRL DPOTrainer (GPU): n/a (no DPO case completed)")


if __name__ == "__main__":
    sys.exit(main())
