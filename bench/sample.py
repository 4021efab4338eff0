"""Sampling throughput: HFEngine's shared-prefill KV loop vs plain ``model.generate``.

Two engine modes: the default (one request per forward: a request's texts never depend on other
requests) and packed (``batch_tokens``: requests of different prompt lengths share a forward, their
buffers holding masked holes; texts then depend on the pack up to rounding).

Builds a tiny random Qwen2 (``conj_train.tiny``) in a temporary folder, renders Con-J-shaped prompts
(about 4x the generation length, lengths spread so no two are equal) and draws ``n`` samples per
prompt at Con-J's decoding settings. Both sides are forced to the full length (end-of-sequence
disabled on both), run in the same process, interleaved, after a warm-up round. The baseline is
``generate(do_sample=True, num_return_sequences=n, ...)`` in two layouts: one call per prompt, and one
call over all prompts (left-padded); the final ratio (packed engine) is taken against the faster of
the two.

    .venv/bin/python bench/sample.py [--hidden 64 --layers 2 --prompts 12 --n 8 --threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

FILLER = (
    "As an evaluation expert, given a question and two possible answers to it, please select which "
    "answer best fits in terms of coherence, accuracy, coverage, and the overall quality. "
    "The weather today is sunny with a light breeze. Paris is the capital of France. "
    "回答1中的计算是错误的，回答2给出了正确的结果，因此回答2更好。法国的首都是巴黎。 "
)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="a causal-LM folder (e.g. `conj real-model` output) instead of the tiny random Qwen2")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="which tokens/s the ratios use; cpu (process time) is steady under other load")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-tokens", type=int, default=1 << 16,
                    help="the packed engine's batch_tokens (rows x (longest prompt + new tokens) per pack)")
    return ap.parse_args()


def make_prompts(tokenizer, count: int, target: int) -> list[str]:
    """Chat-rendered judge-like prompts of roughly ``target`` tokens, all of different lengths."""
    ids = tokenizer(FILLER * (target // 20 + 10), add_special_tokens=False)["input_ids"]
    overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=True,
                                                 add_generation_prompt=True)["input_ids"])
    prompts = []
    for i in range(count):
        body = target - overhead - 32 + (64 * i) // max(count, 1)
        text = tokenizer.decode(ids[:body])
        prompts.append(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                     add_generation_prompt=True))
    return prompts


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """Run ``fn`` (returns generated tokens); return tokens, wall seconds, process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = fn()
    return tokens, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    """Build the model, run the three methods interleaved, print tokens/s and the ratio."""
    args = parse_args()
    import torch
    from transformers import GenerationConfig

    from conj_train.engines.base import GenerationRequest, SamplingParams
    from conj_train.engines.hf import HFEngine
    from conj_train.tiny import build_tiny_model

    torch.set_num_threads(args.threads)
    params = SamplingParams(max_new_tokens=args.new_tokens)  # Con-J: T 1.2, top-p 0.95, top-k 50, rp 1.2
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_model(Path(tmp) / "model", hidden=args.hidden, layers=args.layers,
                                                   seed=0)
        engine = HFEngine(str(model_dir), dtype=args.dtype, device="cpu", threads=args.threads)
    tok, model = engine.tokenizer, engine.model
    prompts = make_prompts(tok, args.prompts, args.prompt_tokens)
    requests = [GenerationRequest(key=str(i), prompt=p, seeds=[1000 * i + j for j in range(args.n)])
                for i, p in enumerate(prompts)]
    lengths = [len(engine.prompt_ids(r)) for r in requests]

    # Full-length generations on both sides: no stop tokens anywhere.
    engine.stop_token_ids = set()
    model.generation_config.eos_token_id = None
    gen_cfg = GenerationConfig(
        do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
        repetition_penalty=params.repetition_penalty, max_new_tokens=params.max_new_tokens,
        num_return_sequences=args.n, eos_token_id=None, pad_token_id=tok.pad_token_id,
    )
    single = [torch.tensor([engine.prompt_ids(r)]) for r in requests]
    tok.padding_side = "left"
    padded = tok([r.prompt for r in requests], add_special_tokens=False, padding=True, return_tensors="pt")

    def run_engine() -> int:
        engine.batch_tokens = 0
        return sum(g.completion_tokens for g in engine.generate(requests, params))

    def run_engine_packed() -> int:
        engine.batch_tokens = args.batch_tokens
        return sum(g.completion_tokens for g in engine.generate(requests, params))

    engine_attn = model.config._attn_implementation

    @contextlib.contextmanager
    def stock_attention():
        # The baseline is what `generate` gives a user: transformers' own SDPA, not the engine's
        # decode-step kernel choice (conj_train/engines/cpu_attention.py).
        model.set_attn_implementation("sdpa")
        try:
            yield
        finally:
            model.set_attn_implementation(engine_attn)

    def run_generate_each() -> int:
        total = 0
        with torch.inference_mode(), stock_attention():
            for ids in single:
                out = model.generate(ids, generation_config=gen_cfg)
                total += out[:, ids.shape[1]:].numel()
        return total

    def run_generate_batched() -> int:
        with torch.inference_mode(), stock_attention():
            out = model.generate(**padded, generation_config=gen_cfg)
        return out[:, padded["input_ids"].shape[1]:].numel()

    methods = {"HFEngine packed (batch_tokens)": run_engine_packed,
               "HFEngine, one request per forward": run_engine,
               "generate, one call per prompt": run_generate_each,
               "generate, all prompts padded": run_generate_batched}
    expected = args.prompts * args.n * args.new_tokens
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    names = list(methods)
    for rep in range(args.repeats + 1):
        torch.manual_seed(rep)
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            tokens, wall, cpu = timed(methods[name])
            if tokens != expected:
                raise SystemExit(f"{name}: {tokens} tokens generated, expected {expected}")
            if rep:  # round 0 warms up
                results[name].append((tokens / wall, tokens / cpu))

    name = args.model or f"tiny random Qwen2 hidden {args.hidden} layers {args.layers}"
    print(f"model {name} ({args.dtype}); {args.prompts} prompts of {min(lengths)}-"
          f"{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), n={args.n}, "
          f"{args.new_tokens} new tokens, {args.threads} thread(s), {args.repeats} repeats after warm-up")
    print(f"{'method':40s} {'median tok/s':>12s} {'best tok/s':>11s} {'median CPU tok/s':>17s}")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(c if args.clock == "cpu" else w for w, c in runs)
        print(f"{name:40s} {medians[name]:12.0f} {max(w for w, _ in runs):11.0f} "
              f"{statistics.median(c for _, c in runs):17.0f}")
    print_hole_share(engine, requests, params, args)
    packed_name, default_name, *baselines = names
    for ours in (default_name, packed_name):
        for name in baselines:
            print(f"{ours} vs {name}: {medians[ours] / medians[name]:.2f}x")
    best_baseline = max(baselines, key=medians.get)
    print(f"faster baseline: {best_baseline} (ratios by {args.clock} time)")
    bound = decode_bound(model, args.n, statistics.mean(lengths) + args.new_tokens / 2)
    for ours in (default_name, packed_name):
        print(f"{ours}: {medians[ours] / bound:.1%} of the decode bound ({bound:.0f} tok/s at {args.n} rows)")
    print(f"ratio vs num_return_sequences: {medians[packed_name] / medians[best_baseline]:.2f}x")


def decode_bound(model, rows: int, context: float) -> float:
    """Generated tokens/s if a decode step cost only its memory traffic, at ``rows`` rows per step.

    A step reads every weight once and each row's KV cache (``context`` positions, all layers), at
    the copy bandwidth measured in this process. More rows per step (packing) raise the bound, so it
    is computed at the default mode's ``n`` rows; the packed mode can exceed it.
    """
    from _limits import copy_bandwidth  # bench/ is on sys.path when run as a script

    cfg = model.config
    size = next(model.parameters()).element_size()
    weights = sum(p.numel() for p in model.parameters()) * size
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_position = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * size
    step_bytes = weights + rows * context * kv_per_position
    # copy_bandwidth counts read + write bytes; a decode step only reads.
    return rows * copy_bandwidth() / step_bytes


def hole_share(packs: list[list[int]], lengths: list[int], rows: int, new_tokens: int) -> float:
    """Share of KV positions that are holes (a row's gap up to its pack's longest prompt)."""
    holes = slots = 0
    for pack in packs:
        longest = max(lengths[i] for i in pack)
        holes += sum(longest - lengths[i] for i in pack) * rows
        slots += len(pack) * rows * (longest + new_tokens)
    return holes / slots


def print_hole_share(engine, requests, params, args: argparse.Namespace) -> None:
    """The packed mode's holes with length-sorted packs vs packs taken in request order, on this
    bench's prompts and on a Con-J-like spread (log-normal prompt lengths, median 900 tokens)."""
    import random

    from conj_train.engines.base import GenerationRequest

    def in_order(lengths: list[int]) -> list[list[int]]:
        packs, cur = [], []
        for i in range(len(lengths)):
            if cur and (len(cur) + 1) * args.n * (max(lengths[j] for j in [*cur, i]) + args.new_tokens) \
                    > args.batch_tokens:
                packs.append(cur)
                cur = []
            cur.append(i)
        return [*packs, cur] if cur else packs

    engine.batch_tokens = args.batch_tokens
    lengths = [len(engine.prompt_ids(r)) for r in requests]
    packs = list(engine._units(requests, [engine.prompt_ids(r) for r in requests], params))
    rng = random.Random(0)
    spread = [min(4000, int(rng.lognormvariate(6.8, 0.5))) for _ in range(512)]
    fake = [GenerationRequest(key=str(i), prompt="", seeds=list(range(args.n))) for i in range(len(spread))]
    sorted_packs = list(engine._units(fake, [[0] * n for n in spread], params))
    print(f"packed-mode holes: this bench {100 * hole_share(packs, lengths, args.n, args.new_tokens):.1f}% "
          f"(request order {100 * hole_share(in_order(lengths), lengths, args.n, args.new_tokens):.1f}%); "
          f"Con-J-like spread of 512 prompts: length-sorted packs "
          f"{100 * hole_share(sorted_packs, spread, args.n, args.new_tokens):.1f}%, request order "
          f"{100 * hole_share(in_order(spread), spread, args.n, args.new_tokens):.1f}%")


if __name__ == "__main__":
    main()
