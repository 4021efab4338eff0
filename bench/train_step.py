"""DPO+SFT step time and peak memory: TRL's DPOTrainer vs a fair two-row baseline vs prefix sharing.

Variants, all real trainers stepping on the same collated batches (``training_step`` + grad-norm
clip + AdamW step, as the Trainer loop does):

  (a) ``trl``   : ``trl.DPOTrainer`` as shipped (two rows per pair; on CPU its fused head scores every
                  position, prompt included)
  (b) ``base``  : two rows per pair, LM head only at judgment positions (``PrefixSharedDPOTrainer``
                  with ``share_prefix=False``): the fair baseline for prefix sharing alone
  (c) ``ours``  : ``PrefixSharedDPOTrainer`` (prompt computed once, head only at judgment positions)

Model: a random Qwen2 (hidden 256, intermediate 1024, 4 layers, 8 heads, 2 KV heads, vocab 2048,
SDPA, fp32), or ``--model PATH`` (e.g. SmolLM2 from ``conj real-model``, Con-J shapes by default);
``--dtype bfloat16`` steps under the accelerator's autocast as the Trainer loop does. Reference =
the initial weights, policy perturbed. Timings: one process, rounds interleaved with a
rotating order, 1 warm-up round, median of the measured rounds. Peak memory: each variant in its own
fresh subprocess (2 steps), ``ru_maxrss``; "step memory" is the peak minus the RSS after set-up
(libraries, both models, batch: ~640 MB, of which ~555 MB is importing torch/transformers/trl). Prints
the padding share of random vs length-grouped batches on a synthetic Con-J length mix.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_step.py [--rounds 5 --threads 1 --pairs 2 --cases ...]

Throughput ratios are the median over rounds of each round's (a)/(c) time ratio (the machine is
shared; steps of one round run back to back); the ratio of the medians is printed too. Last line:
``share of same-process GEMM FLOP/s (dtype): N%`` (model FLOPs per step, :func:`step_flops`, over
the 1024^3 GEMM rate at the same dtype and threads), then ``ratio vs TRL DPOTrainer: N.NNx``, the
smaller over the cases run. ``--clock cpu`` times process CPU seconds (one thread: steady under load).
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

VARIANTS = ("trl", "base", "ours")
# (prompt, chosen, rejected) per pair.
CASES = {
    "equal 1024/200/200": [(1024, 200, 200), (1024, 200, 200)],
    "unequal": [(1024, 200, 140), (900, 170, 230)],
    # Con-J's shapes: a judge prompt with two answers (~600 tokens), judgments of 100-200 tokens.
    "con-j 600/150": [(600, 150, 150), (640, 120, 180)],
}
# The random model's shapes (the tokenizer's ids are below its vocabulary).
RANDOM_QWEN2 = {"vocab_size": 2048, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                "num_attention_heads": 8, "num_key_value_heads": 2}
# The DPO+SFT objective every benchmark trainer steps (Con-J's loss types; the values only set the work).
DPO_ARGS = {"report_to": "none", "save_strategy": "no", "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.1],
            "beta": 0.1, "max_length": None, "learning_rate": 1e-6}
# Which cases run by default for the random model and for a --model folder (real shapes are slow).
DEFAULT_CASES = {"random": ("equal 1024/200/200", "unequal"), "model": ("con-j 600/150",)}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default=None, help="comma-separated names from CASES (default: by model)")
    ap.add_argument("--model", default=None,
                    help="a causal-LM folder (e.g. `conj real-model` output) instead of the random Qwen2")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                    help="bfloat16 = mixed precision (fp32 weights, bf16 autocast), as training runs it")
    ap.add_argument("--pairs", type=int, default=2, help="pairs per batch (each case's list is repeated)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu = process CPU time: with one thread, steady under other load on the machine")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    ap.add_argument("--memory-child", nargs=3, metavar=("VARIANT", "CASE", "TOKENIZER"),
                    help=argparse.SUPPRESS)
    return ap.parse_args()


def random_qwen2(shapes: dict[str, int], *, seed: int = 0, attn: str = "sdpa", dtype: Any = None,
                 device: str = "cpu", **config: Any) -> Any:
    """A Qwen2 causal LM of ``shapes`` with fixed random weights (``seed``) and tied embeddings, built in
    place on ``device`` (no CPU copy of a GPU model); ``config``: further ``Qwen2Config`` fields."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    cfg = Qwen2Config(**shapes, tie_word_embeddings=True, attn_implementation=attn, **config)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype or torch.float32, attn_implementation=attn)


def build_model(seed: int = 0, model_dir: str | None = None) -> Any:
    """The benchmark model: ``model_dir``'s weights (fp32, SDPA), else fixed random Qwen2 weights."""
    import torch
    from transformers import AutoModelForCausalLM

    if model_dir:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return random_qwen2(RANDOM_QWEN2, seed=seed, max_position_embeddings=4096)


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


def make_trainer(variant: str, workdir: Path, tokenizer_dir: Path, model_dir: str | None = None,
                 dtype: str = "float32") -> Any:
    """One trainer with its own policy/reference copies and AdamW."""
    config = dpo_config(workdir / variant, per_device_train_batch_size=2, bf16=dtype == "bfloat16", use_cpu=True,
                        gradient_checkpointing=False)
    return variant_trainer(variant, build_model(0, model_dir), build_model(0, model_dir), config, tokenizer_dir)


def variant_trainer(variant: str, policy: Any, reference: Any, config: Any, tokenizer_dir: Path) -> Any:
    """The trainer of ``variant`` ("trl", "base" or "ours") over ``policy`` (perturbed here, so the
    losses are not at their starting point) and the frozen ``reference``; also used by gpu_check.py."""
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

    It steps ``trainer.model_wrapped``: the model itself, or the model gpu_check.py's
    ``prepare_like_train`` prepared. ``autocast``: enter the accelerator's autocast around the step, as
    the Trainer loop does under bf16 mixed precision; a prepared model has it in its forward already.
    """
    import contextlib

    model = trainer.model_wrapped
    with trainer.accelerator.autocast() if autocast else contextlib.nullcontext():
        loss = trainer.training_step(model, dict(batch))
    trainer.accelerator.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return float(loss)


def rss_mb() -> float:
    """Current resident set size in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(variant: str, case: str, tokenizer: str, args: argparse.Namespace) -> None:
    """Set up one variant in this fresh process, run 2 steps, print peak RSS as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(variant, Path(tmp), Path(tokenizer), args.model, args.dtype)
        batch = make_batch(case_pairs(case, args.pairs), trainer.processing_class.pad_token_id,
                           trainer.model.config.vocab_size)
        setup = rss_mb()
        for _ in range(2):
            step(trainer, batch)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"setup": setup, "peak": peak}))


def tiny_tokenizer_dir(tmp: Path) -> Path:
    """A saved tokenizer (the tiny model's); only its pad id matters, batches are token ids."""
    from conj_train.tiny import build_tiny_model

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
           "--dtype", args.dtype, *(["--model", args.model] if args.model else []),
           "--memory-child", variant, case, str(tokenizer)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    """Interleaved timings, per-variant peak memory, padding shares, ratios."""
    args = parse_args()
    warnings.filterwarnings("ignore")
    if args.memory_child:
        memory_child(*args.memory_child, args)
        return
    if args.cases is None:
        args.cases = ",".join(DEFAULT_CASES["model" if args.model else "random"])
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case {unknown[0]!r}; cases: {', '.join(map(repr, CASES))}")
    tmp_dir = tempfile.TemporaryDirectory()
    tok_dir = Path(args.model) if args.model else tiny_tokenizer_dir(Path(tmp_dir.name))
    # Children first, while this process is small: a child's ru_maxrss starts from its parent's RSS
    # (vfork/exec keeps the high-water mark).
    parent = rss_mb()
    nan = {"setup": float("nan"), "peak": float("nan")}
    mem = {case: {v: nan if args.no_memory else measure_memory(v, case, tok_dir, args)
                  for v in VARIANTS} for case in cases}
    import torch
    from _limits import gemm_flops, matmul_parameters  # bench/ is on sys.path when run as a script

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gemm = gemm_flops(dtype, clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()}, "
          f"parent RSS when spawning memory children {parent:.0f} MB")
    print(f"model {args.model or 'random Qwen2 h256 x4'}, {args.dtype}; same-process GEMM 1024^3 "
          f"{args.dtype}: {gemm / 1e9:.0f} GFLOP/s")
    for size in (2, 8):
        shares = padding_report(size)
        print(f"padding share, batch {size} pairs: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    ratios, shares = [], []
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"clock: {args.clock}")
    with tmp_dir as tmp:
        trainers = {v: make_trainer(v, Path(tmp), tok_dir, args.model, args.dtype) for v in VARIANTS}
        pad_id = trainers["trl"].processing_class.pad_token_id
        model = trainers["trl"].model
        body, head = matmul_parameters(model)
        for case in cases:
            pairs = case_pairs(case, args.pairs)
            batch = make_batch(pairs, pad_id, model.config.vocab_size)
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            losses: dict[str, float] = {}
            for rnd in range(args.rounds + 1):
                order = VARIANTS[rnd % 3:] + VARIANTS[:rnd % 3]
                for v in order:
                    start = clock()
                    loss = step(trainers[v], batch)
                    elapsed = clock() - start
                    if rnd == 0:
                        losses[v] = loss
                    else:
                        times[v].append(elapsed)
            med = {v: statistics.median(times[v]) for v in VARIANTS}
            print(f"\ncase {case}: pairs {pairs}, first-step loss " +
                  ", ".join(f"{v} {losses[v]:.6f}" for v in VARIANTS))
            for v in VARIANTS:
                m = mem[case][v]
                print(f"  {v:5s} {med[v]:7.3f} s/step (rounds {', '.join(f'{t:.2f}' for t in times[v])})  "
                      f"peak RSS {m['peak']:.0f} MB, step memory {m['peak'] - m['setup']:.0f} MB")
            # Throughput ratios: median over rounds of the same-round ratio. The three steps of a round
            # run back to back, so a change in the background load hits them alike.
            speed_a = statistics.median(t / o for t, o in zip(times["trl"], times["ours"], strict=True))
            speed_b = statistics.median(t / o for t, o in zip(times["base"], times["ours"], strict=True))
            print(f"  ratio of medians: trl/ours {med['trl'] / med['ours']:.2f}x, "
                  f"base/ours {med['base'] / med['ours']:.2f}x")
            ours_m, trl_m, base_m = (mem[case][v] for v in ("ours", "trl", "base"))
            total = ours_m["peak"] / trl_m["peak"]
            step_mem = (ours_m["peak"] - ours_m["setup"]) / (trl_m["peak"] - trl_m["setup"])
            print(f"  ours vs trl: {speed_a:.2f}x throughput, {total:.2f}x peak RSS, "
                  f"{step_mem:.2f}x step memory; ours vs base: {speed_b:.2f}x throughput, "
                  f"{ours_m['peak'] / base_m['peak']:.2f}x peak RSS")
            print(f"  goals: >=2.0x trl {_verdict(speed_a >= 2.0)}, >=1.4x base {_verdict(speed_b >= 1.4)}, "
                  f"<=0.6x trl memory: peak RSS {_verdict(total <= 0.6)}, "
                  f"step memory {_verdict(step_mem <= 0.6)}")
            flops = step_flops(pairs, body, head, model.config)
            share = flops / med["ours"] / gemm
            print(f"  model FLOPs per step {flops / 1e12:.2f} T (policy fwd+bwd + reference fwd over the "
                  f"distinct tokens, head at judgment tokens, causal attention); ours "
                  f"{flops / med['ours'] / 1e9:.0f} GFLOP/s = {share:.1%} of the GEMM rate, trl "
                  f"{flops / med['trl'] / gemm:.1%} (same FLOPs, so the same work)")
            ratios.append(speed_a)
            shares.append(share)
    print(f"load average at end {os.getloadavg()}")
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
