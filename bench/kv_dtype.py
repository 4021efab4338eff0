"""Benchmark: HFEngine decoding a half-precision model on CPU with its KV cache in float32 vs in the
model's dtype.

The decode-step attention of a bf16/fp16 CPU model runs in float32
(``conj_train/engines/cpu_attention.py``); with the cache in the model dtype every layer casts the
whole cache to float32 at every step, with a float32 cache each position is cast once when written
(the engine's default for such models). Same process, same engine, same requests (``--prompts``
prompts of ~``--prompt-tokens`` tokens, ``--n`` samples each at Con-J's settings, ``--new-tokens``
tokens, end-of-sequence off); the two layouts alternate over ``--rounds`` measured rounds after a
warm-up; the texts of both must be equal (the cache holds the same values).

    OMP_NUM_THREADS=2 .venv/bin/python bench/kv_dtype.py --model DIR --threads 2 [--rounds 3]

Last line: ``float32 KV vs model-dtype KV: N.NNx tokens/s``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sample import make_prompts  # bench/ is on sys.path when run as a script


def main() -> None:
    """Time both cache layouts, interleaved; print tokens/s and the ratio last."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a causal-LM folder (e.g. `conj real-model` output)")
    ap.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=600)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from conj_train.engines.base import GenerationRequest, SamplingParams
    from conj_train.engines.hf import HFEngine

    engine = HFEngine(args.model, dtype=args.dtype, device="cpu", threads=args.threads)
    if engine._kv_dtype != torch.float32:
        raise SystemExit("the engine does not decode this model with float32 attention: nothing to compare")
    engine.stop_token_ids = set()
    prompts = make_prompts(engine.tokenizer, args.prompts, args.prompt_tokens)
    requests = [GenerationRequest(key=str(i), prompt=p, seeds=[1000 * i + j for j in range(args.n)])
                for i, p in enumerate(prompts)]
    params = SamplingParams(max_new_tokens=args.new_tokens)
    layouts = {"float32 KV": torch.float32, "model-dtype KV": None}
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    texts: dict[str, list[str]] = {}
    for rnd in range(args.rounds + 1):
        for name in list(layouts)[rnd % 2:] + list(layouts)[: rnd % 2]:
            engine._kv_dtype = layouts[name]
            start = time.perf_counter()
            gens = engine.generate(requests, params)
            wall = time.perf_counter() - start
            texts.setdefault(name, [g.text for g in gens])
            if rnd:
                rates[name].append(sum(g.completion_tokens for g in gens) / wall)
    print(f"model {args.model} ({args.dtype}), {args.prompts} prompts of ~{args.prompt_tokens} tokens, n {args.n}, "
          f"{args.new_tokens} new tokens, {args.threads} thread(s), {args.rounds} rounds")
    for name, r in rates.items():
        print(f"{name:16s} median {statistics.median(r):7.1f} tok/s (rounds: {', '.join(f'{x:.1f}' for x in r)})")
    print(f"texts equal: {texts['float32 KV'] == texts['model-dtype KV']}")
    ratio = statistics.median(rates["float32 KV"]) / statistics.median(rates["model-dtype KV"])
    print(f"float32 KV vs model-dtype KV: {ratio:.2f}x tokens/s")


if __name__ == "__main__":
    main()
