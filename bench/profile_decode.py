"""Where an HFEngine sampling call spends its time: the profile behind bench/sample.py's decode-bound share.

Loads the model as bench/sample.py does (same prompts, same engine, stop tokens off), warms up once,
then runs ``engine.generate`` (default mode, one request of ``--n`` rows) under ``torch.profiler`` twice,
for 1 and for ``--new-tokens`` tokens; the difference is the decode steps alone (same prefill). It
groups their operators' self CPU time: matmuls, attention, other operators, and the wall time outside
any operator (Python and dispatch). The decode bound of bench/sample.py counts
only weight + KV bytes; this shows what else a step costs on the machine it runs on.

    OMP_NUM_THREADS=2 python bench/profile_decode.py --model runs/smollm2/model --dtype bfloat16 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"),
    "attention": ("scaled_dot_product", "flash_attention", "_efficient_attention"),
}


def group_of(name: str) -> str:
    """The group of one profiler operator name (``other ops`` for everything not listed in GROUPS)."""
    for group, keys in GROUPS.items():
        if any(k in name for k in keys):
            return group
    return "other ops"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF model folder (e.g. from `conj real-model`)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    ap.add_argument("--prompt-tokens", type=int, default=600)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=12, help="operators to list")
    args = ap.parse_args()

    import torch
    from sample import set_up
    from torch.profiler import ProfilerActivity, profile

    totals: dict[int, tuple[float, int, dict[str, tuple[float, int]]]] = {}
    for new_tokens in (1, args.new_tokens):
        bench_args = argparse.Namespace(device="cpu", dtype=args.dtype, prompts=1, prompt_tokens=args.prompt_tokens,
                                        new_tokens=new_tokens, n=args.n, threads=args.threads, batch_tokens=1 << 16)
        torch.set_num_threads(args.threads)
        bench = set_up(bench_args, args.model)
        run = bench.methods["HFEngine, one request per forward"]
        run()  # warm-up
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            tokens = run()
        wall = time.perf_counter() - t0
        # Self times only: a parent operator (aten::linear) does not count its children (aten::mm) again.
        events = {e.key: (e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()
                  if e.self_cpu_time_total > 0}
        totals[new_tokens] = (wall, tokens, events)
        print(f"{new_tokens} new token(s): {tokens} tokens in {wall:.2f} s (profiled)")
    # The decode steps = the long call minus the one-token call (the same prefill and set-up).
    (w1, _, ev1), (wn, _, evn) = totals[1], totals[args.new_tokens]
    steps = args.new_tokens - 1
    decode = {k: (t - ev1.get(k, (0.0, 0))[0], c - ev1.get(k, (0.0, 0))[1]) for k, (t, c) in evn.items()}
    wall = wn - w1
    groups: dict[str, float] = {}
    for key, (t, _) in decode.items():
        groups[group_of(key)] = groups.get(group_of(key), 0.0) + t
    in_ops = sum(groups.values())
    print(f"model {args.model} ({args.dtype}); 1 prompt of ~{args.prompt_tokens} tokens, n={args.n}, "
          f"{args.threads} thread(s); {steps} decode steps of {args.n} rows: {1000 * wall / steps:.1f} ms/step "
          f"({args.n * steps / wall:.0f} tok/s while decoding)")
    print(f"{'operator (decode steps only)':<48} {'self CPU ms/step':>16} {'calls/step':>10}")
    for key, (t, c) in sorted(decode.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{key[:48]:<48} {1000 * t / steps:>16.2f} {c / steps:>10.1f}")
    shares = {g: 100 * t / wall for g, t in sorted(groups.items(), key=lambda kv: -kv[1])}
    shares["outside operators"] = max(0.0, 100 * (wall - in_ops) / wall)
    print("decode profile (share of decode wall): " + ", ".join(f"{g} {s:.0f}%" for g, s in shares.items()))


if __name__ == "__main__":
    main()
