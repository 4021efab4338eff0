"""Sampling throughput: HFEngine's shared-prefill KV loop vs plain ``model.generate`` (and vLLM's CPU build).

Two engine modes: the default (one request per forward: a request's texts never depend on other
requests) and packed (``batch_tokens``: requests of different prompt lengths share a forward, their
buffers holding masked holes; texts then depend on the pack up to rounding).

Builds a tiny random Qwen2 (``conj_train.model_builders.tiny``) in a temporary folder (or a random model of
``--shape``, bench/_models.py, with the tiny tokenizer; or loads ``--model``), renders Con-J-shaped
prompts (about 4x the generation length, lengths spread so no two are equal) and draws ``n`` samples
per prompt at Con-J's decoding settings. Both sides are forced to the full length (end-of-sequence
disabled on both), run in the same process, interleaved, after a warm-up round; the table gives the
median of the measured rounds (``--rounds``) and their spread ((max - min) / median). The baseline is
``generate(do_sample=True, num_return_sequences=n, ...)`` in two layouts: one call per prompt, and one
call over all prompts (left-padded); the final ratio (packed engine) is taken against the faster of
the two.

Peak memory per method: on CPU each method runs once in its own fresh process (peak RSS, ``VmHWM``
restarted once the model and prompts are loaded; "over set-up" = that peak minus the RSS then;
``--no-memory`` skips it);
on CUDA in this process, ``torch.cuda.max_memory_allocated`` over the measured calls ("over set-up" =
that peak minus what was allocated before the call: KV cache and activations).

    .venv/bin/python bench/sample.py [--hidden 64 --layers 2 --prompts 12 --n 8 --threads 1 --rounds 5]
    python bench/sample.py --device cuda --dtype bfloat16     # bench/gpu_check.sh: Qwen2-1.5B shape

``--vllm`` adds a third engine, :class:`conj_train.engines.vllm.VLLMEngine` (the vLLM environment of
``make test-vllm``: ``.venv-vllm/bin/python bench/sample.py --vllm``), started once on the same model
folder and dtype (its start-up, mostly torch.compile warm-up, printed apart from the rates), run on the
same requests and settings with end-of-sequence ignored (``ignore_eos``), its prefix cache emptied
before each call (a prompt's ``n`` copies still share one prefill within the call, as in HFEngine),
its worker's OpenMP threads bound to ``--threads`` cores (``VLLM_CPU_OMP_THREADS_BIND``; a value
already in the environment is kept). Its CPU time counts its engine processes; its memory is not
measured (it runs in other processes). vLLM's CPU attention needs heads of 32+, so with ``--vllm``
the tiny model has ``hidden / 32`` heads (``--heads``). Without ``--vllm`` the script never imports vllm.

Last lines: each engine mode's share of the decode bound (:func:`decode_bound`: weights + KV bytes
per step at the copy bandwidth measured in this process), with ``--vllm`` vLLM's ratios, then
``ratio vs num_return_sequences: N.NNx``. ``--time-limit S`` measures fewer rounds (at least 1) rather than run past S seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _device  # bench/ is on sys.path when run as a script
from _models import SHAPES, save_random_model, stock_attention

FILLER = (
    "As an evaluation expert, given a question and two possible answers to it, please select which "
    "answer best fits in terms of coherence, accuracy, coverage, and the overall quality. "
    "The weather today is sunny with a light breeze. Paris is the capital of France. "
    "回答1中的计算是错误的，回答2给出了正确的结果，因此回答2更好。法国的首都是巴黎。 "
)
# The four methods: the engine's two modes, then the two `generate` baselines.
METHODS = ("HFEngine packed (batch_tokens)", "HFEngine, one request per forward",
           "generate, one call per prompt", "generate, all prompts padded")
VLLM_METHOD = "VLLMEngine (vllm-cpu)"  # --vllm: the third engine row
# The head sizes vLLM's CPU attention takes (vllm/v1/attention/backends/cpu_attn.py, vllm-cpu 0.32.0).
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="a causal-LM folder (e.g. `conj real-model` output) instead of the tiny random Qwen2")
    ap.add_argument("--shape", choices=tuple(SHAPES), default=None,
                    help="a random model of this shape instead of the tiny one (default on CUDA: qwen2-1.5b)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="which tokens/s the ratios use; cpu (process time) is steady under other load")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=None,
                    help="the tiny model's attention heads (default 4; with --vllm, hidden/32 when hidden/4 < 32: "
                         "vLLM's CPU attention needs heads of 32+)")
    ap.add_argument("--kv-heads", type=int, default=None, help="the tiny model's KV heads (default heads/2)")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=5,
                    help="measured rounds after the warm-up round (--repeats: the old name)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-tokens", type=int, default=1 << 16,
                    help="the packed engine's batch_tokens (rows x (longest prompt + new tokens) per pack)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds for the whole run: measure fewer rounds (at least 1) rather than run past it")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method memory processes (CPU)")
    ap.add_argument("--vllm", action="store_true",
                    help="add VLLMEngine as a third engine row (needs vllm: `make test-vllm`'s .venv-vllm)")
    ap.add_argument("--memory-child", nargs=2, metavar=("METHOD", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.shape is None and args.device == "cuda" and not args.model:
        args.shape = "qwen2-1.5b"
    if args.heads is None:
        args.heads = 4 if not args.vllm or args.hidden // 4 >= 32 else max(1, args.hidden // 32)
    if args.kv_heads is None:
        args.kv_heads = max(1, args.heads // 2)
    return args


def make_prompts(tokenizer, count: int, target: int) -> list[str]:
    """Chat-rendered judge-like prompts of roughly ``target`` tokens, all of different lengths.

    Each starts at another offset of the text, so they share nothing beyond the chat template: the
    packed engine takes a prefix shared with an earlier prompt from its cache, and prompts that were
    prefixes of each other (as before 2026-12-06's later session) would credit it with work a real
    sampling pass does not skip."""
    ids = tokenizer(FILLER * (target // 20 + 10), add_special_tokens=False)["input_ids"]
    overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=True,
                                                 add_generation_prompt=True)["input_ids"])
    prompts = []
    for i in range(count):
        body = target - overhead - 32 + (64 * i) // max(count, 1)
        text = tokenizer.decode(ids[97 * i : 97 * i + body])
        prompts.append(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                     add_generation_prompt=True))
    return prompts


def children_cpu_seconds() -> float:
    """CPU seconds of this process's live child processes (vLLM's engine core and worker); 0 without psutil."""
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


def timed(fn: Callable[[], int], device: str = "cpu") -> tuple[int, float, float]:
    """Run ``fn`` (returns generated tokens); return tokens, wall seconds, CPU seconds of this process
    and its child processes (vLLM computes in its own)."""
    _device.sync(device)
    wall, cpu = time.perf_counter(), time.process_time() + children_cpu_seconds()
    tokens = fn()
    _device.sync(device)
    return tokens, time.perf_counter() - wall, time.process_time() + children_cpu_seconds() - cpu


@dataclass
class Bench:
    """The loaded engine, its requests and the four methods (each returns the tokens it generated)."""

    engine: Any
    requests: list[Any]
    lengths: list[int]
    params: Any
    methods: dict[str, Callable[[], int]]


def set_up(args: argparse.Namespace, model_dir: str | Path) -> Bench:
    """Load the engine from ``model_dir``, render the prompts, define the methods."""
    import torch
    from transformers import GenerationConfig

    from conj_train.engines.base import GenerationRequest, SamplingParams
    from conj_train.engines.hf import HFEngine

    params = SamplingParams(max_new_tokens=args.new_tokens)  # Con-J: T 1.2, top-p 0.95, top-k 50, rp 1.2
    engine = HFEngine(str(model_dir), dtype=args.dtype, device=args.device, threads=args.threads)
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
    single = [torch.tensor([engine.prompt_ids(r)], device=args.device) for r in requests]
    tok.padding_side = "left"
    padded = tok([r.prompt for r in requests], add_special_tokens=False, padding=True, return_tensors="pt")
    padded = {k: v.to(args.device) for k, v in padded.items()}

    def run_engine() -> int:
        engine.batch_tokens = 0
        return sum(g.completion_tokens for g in engine.generate(requests, params))

    def run_engine_packed() -> int:
        engine.batch_tokens = args.batch_tokens
        return sum(g.completion_tokens for g in engine.generate(requests, params))


    def run_generate_each() -> int:
        total = 0
        with torch.inference_mode(), stock_attention(model):
            for ids in single:
                out = model.generate(ids, generation_config=gen_cfg)
                total += out[:, ids.shape[1]:].numel()
        return total

    def run_generate_batched() -> int:
        with torch.inference_mode(), stock_attention(model):
            out = model.generate(**padded, generation_config=gen_cfg)
        return out[:, padded["input_ids"].shape[1]:].numel()

    methods = dict(zip(METHODS, (run_engine_packed, run_engine, run_generate_each, run_generate_batched),
                       strict=True))
    return Bench(engine, requests, lengths, params, methods)


def memory_child(method: str, model_dir: str, args: argparse.Namespace) -> None:
    """Set up in this fresh process, run ``method`` once, print peak RSS and RSS after set-up as JSON.

    The peak is restarted after set-up: loading a checkpoint can pass through more memory than the
    loaded model holds (a bf16 file read before the copy in the run's dtype), and that is not sampling.
    """
    import torch

    torch.manual_seed(0)
    bench = set_up(args, model_dir)
    if not _device.reset_peak_rss():
        print("warning: could not restart the peak RSS; it includes the set-up", file=sys.stderr)
    setup = _device.rss_mb()
    bench.methods[method]()
    print(json.dumps({"setup": setup, "peak": _device.peak_rss_mb()}))


def measure_memory(method: str, model_dir: str | Path, args: argparse.Namespace) -> dict[str, float]:
    """Run :func:`memory_child` in a fresh interpreter with this run's options."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--device", args.device, "--dtype", args.dtype, "--prompts", str(args.prompts),
           "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens), "--n", str(args.n),
           "--threads", str(args.threads), "--batch-tokens", str(args.batch_tokens),
           "--memory-child", method, str(model_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_vllm() -> str:
    """Import vLLM (only for ``--vllm``) with its log on stderr, so stdout keeps this bench's lines; its version."""
    # vLLM reads these when it is first imported; its log defaults to stdout.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    # Its CPU KV cache in GiB (the default asks for a large share of the host's memory), as tests/test_vllm_real.py.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        import vllm
    except ImportError as exc:
        raise SystemExit(f"--vllm: vLLM does not import ({exc}); run in the vLLM environment "
                         "(`make test-vllm` builds .venv-vllm): .venv-vllm/bin/python bench/sample.py --vllm") from None
    return str(getattr(vllm, "__version__", "?"))


def bind_vllm_threads(threads: int) -> str:
    """Give vLLM's CPU worker ``threads`` OpenMP threads, as many as the HF methods' torch threads.

    vLLM binds its worker's OpenMP threads to the cores in ``VLLM_CPU_OMP_THREADS_BIND``; its default
    ("auto") takes a NUMA node's cores less one reserved for the engine core's scheduler, which on a
    small machine is not ``--threads``. Here: the first ``threads`` cores this process may run on (the
    cores "auto" would pick first); a value already in the environment is kept ("nobind": unbound,
    ``OMP_NUM_THREADS`` threads). Returns a line saying what vLLM was told.
    """
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    if bind is None or bind == "auto":
        cores = sorted(os.sched_getaffinity(0))
        if threads > len(cores):
            raise SystemExit(f"--threads {threads}: this process may use only {len(cores)} cores")
        bind = ",".join(str(c) for c in cores[:threads])
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
        source = f"set from --threads {threads}"
    else:
        source = "from the environment"
    if bind == "nobind":
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the worker inherits it
        return f"VLLM_CPU_OMP_THREADS_BIND=nobind ({source}): {threads} unbound OpenMP thread(s) in vLLM's worker"
    from vllm.utils.cpu_resource_utils import parse_id_list

    cores = parse_id_list(bind.split("|")[0])
    note = "" if len(cores) == threads else f"; NOT the HF methods' {threads} thread(s)"
    return (f"VLLM_CPU_OMP_THREADS_BIND={bind} ({source}): {len(cores)} OpenMP thread(s) in vLLM's worker "
            f"bound to core(s) {cores}{note}")


def vllm_processes() -> str:
    """vLLM's processes (children of this one): name, threads, CPUs each may run on."""
    try:
        import psutil
    except ImportError:
        return "(psutil absent)"
    seen = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            seen.append(f"{child.name()} {child.num_threads()} threads on CPUs {child.cpu_affinity()}")
    return "; ".join(seen) or "none"


def start_vllm(args: argparse.Namespace, model_dir: str | Path) -> tuple[Any, float]:
    """A :class:`VLLMEngine` on ``model_dir`` that never stops at end-of-sequence; its start-up seconds."""
    from conj_train.engines.vllm import VLLMEngine

    class FullLengthVLLMEngine(VLLMEngine):
        """The bench's vLLM engine: every sample runs ``max_new_tokens``, as on the other rows.

        vLLM's ``SamplingParams.ignore_eos`` keeps sampling past EOS (EOS may still be drawn, as in the
        HF rows with no stop tokens); vLLM sets the same attribute after construction itself
        (``vllm/v1/engine/input_processor.py``). Bench-only: the product engine stops at EOS.
        """

        def _sampling_params(self, params, seed):
            sampling = super()._sampling_params(params, seed)
            sampling.ignore_eos = True
            return sampling

    # Prompts are prompt_tokens - 32 .. + 32 tokens (make_prompts); the engine refuses any that would not fit.
    max_len = args.prompt_tokens + 64 + args.new_tokens + 64
    began = time.perf_counter()
    engine = FullLengthVLLMEngine(str(model_dir), dtype=args.dtype, max_model_len=max_len)
    return engine, time.perf_counter() - began


def vllm_method(engine: Any, bench: Bench) -> Callable[[], int]:
    """The vLLM row: the bench's requests and params; a cold prefix cache on every call."""
    want = {r.key: n for r, n in zip(bench.requests, bench.lengths, strict=True)}

    def run_vllm() -> int:
        # Across calls the same prompts would hit vLLM's prefix cache and skip their prefill, which the
        # other rows pay every call (and a sampling run pays once per prompt).
        engine._llm.reset_prefix_cache()
        gens = engine.generate(bench.requests, bench.params)
        got = {g.key: g.prompt_tokens for g in gens}
        if got != want:
            raise SystemExit(f"{VLLM_METHOD}: prompt tokens {got} differ from HFEngine's {want}")
        return sum(g.completion_tokens for g in gens)

    return run_vllm


def stop_vllm(engine: Any) -> None:
    """Shut vLLM's engine processes down now (not at exit, after the last line)."""
    with contextlib.suppress(Exception):
        engine._llm.llm_engine.engine_core.shutdown()


def main() -> None:
    """Build the model, run the four methods interleaved, print tokens/s, memory and the ratio."""
    started = time.perf_counter()
    args = parse_args()
    import torch

    if args.memory_child:
        memory_child(*args.memory_child, args)
        return
    _device.check(args.device, args.clock)
    if args.vllm and args.device != "cpu":
        raise SystemExit("--vllm: CPU only here (vLLM on a GPU: bench/vllm_check.py)")
    vllm_version = check_vllm() if args.vllm else None
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir: str | Path = args.model
        elif args.shape:
            model_dir = save_random_model(Path(tmp) / "model", args.shape, dtype=getattr(torch, args.dtype),
                                          device=args.device)
        else:
            from conj_train.model_builders.tiny import build_tiny_model

            model_dir = build_tiny_model(Path(tmp) / "model", hidden=args.hidden, layers=args.layers,
                                         heads=args.heads, kv_heads=args.kv_heads, seed=0)
        names = list(METHODS)
        nan = {"setup": float("nan"), "peak": float("nan")}
        # CPU: each method in its own process before this one loads the model; CUDA: counted below.
        mem = {name: nan if args.no_memory or cuda else measure_memory(name, model_dir, args) for name in names}
        if args.vllm:
            # Started before this process loads the model; vLLM spawns (not forks) its engine processes.
            vllm_threads = bind_vllm_threads(args.threads)
            vllm_engine, vllm_start_s = start_vllm(args, model_dir)
            torch.set_num_threads(args.threads)  # this process's (HF) threads, whatever vLLM set
        bench = set_up(args, model_dir)
        if args.vllm:
            bench.methods[VLLM_METHOD] = vllm_method(vllm_engine, bench)
            names.append(VLLM_METHOD)
            mem[VLLM_METHOD] = nan  # its engine core and worker are other processes
    engine, requests, lengths, params, methods = (bench.engine, bench.requests, bench.lengths, bench.params,
                                                  bench.methods)
    model = engine.model
    expected = args.prompts * args.n * args.new_tokens
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    deadline = started + args.time_limit if args.time_limit else None
    gpu_mem: dict[str, dict[str, float]] = {}  # the measured call with the highest peak, per method
    idle = [0.0, 0.0]  # --vllm: CPU seconds of vLLM's processes while the other methods ran, their wall seconds
    for rep in range(args.rounds + 1):
        round_start = time.perf_counter()
        torch.manual_seed(rep)
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            if cuda:
                _device.sync(args.device)
                held = _device.cuda_allocated_mb()
                _device.cuda_reset_peak()
            children = children_cpu_seconds() if args.vllm and name != VLLM_METHOD else 0.0
            tokens, wall, cpu = timed(methods[name], args.device)
            if args.vllm and name != VLLM_METHOD:
                idle[0] += children_cpu_seconds() - children
                idle[1] += wall
            if tokens != expected:
                raise SystemExit(f"{name}: {tokens} tokens generated, expected {expected}")
            if rep:  # round 0 warms up
                results[name].append((tokens / wall, tokens / cpu))
                if cuda and (name not in gpu_mem or _device.cuda_peak_mb() > gpu_mem[name]["peak"]):
                    gpu_mem[name] = {"setup": held, "peak": _device.cuda_peak_mb()}
        last_round = time.perf_counter() - round_start
        if deadline is not None and 1 <= rep < args.rounds and time.perf_counter() + last_round > deadline:
            print(f"time limit: {rep} of {args.rounds} rounds measured")
            break
    measured = len(results[names[0]])
    mem.update(gpu_mem)
    if args.vllm:
        vllm_processes_seen = vllm_processes()
        stop_vllm(vllm_engine)

    heads = "" if (args.heads, args.kv_heads) == (4, 2) else f" heads {args.heads}/{args.kv_heads}"
    label = args.model or (f"random Qwen2 of shape {args.shape}" if args.shape else
                           f"tiny random Qwen2 hidden {args.hidden} layers {args.layers}{heads}")
    print(f"model {label} ({args.dtype}); {args.prompts} prompts of {min(lengths)}-"
          f"{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), n={args.n}, "
          f"{args.new_tokens} new tokens, {args.threads} thread(s), {measured} rounds after warm-up")
    print(_device.describe(args.device))
    if args.vllm:
        print(f"vLLM {vllm_version}: start-up {vllm_start_s:.0f} s (not in the rates; mostly torch.compile "
              f"warm-up), KV cache VLLM_CPU_KVCACHE_SPACE={os.environ.get('VLLM_CPU_KVCACHE_SPACE')} GiB, "
              "ignore_eos, prefix cache emptied before each call")
        print(f"vLLM threads: {vllm_threads}; its processes: {vllm_processes_seen}")
        print(f"vLLM's processes used {idle[0]:.1f} CPU s while the other methods ran ({idle[1]:.0f} s); "
              "its peak RSS is not measured (other processes)")
    peak_label = "peak GPU MB" if cuda else "peak RSS MB"
    print(f"{'method':40s} {'median tok/s':>12s} {'min':>8s} {'max':>8s} {'spread':>7s} "
          f"{'median CPU tok/s':>17s} {peak_label:>12s} {'over set-up MB':>15s}")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(c if args.clock == "cpu" else w for w, c in runs)
        walls = [w for w, _ in runs]
        spread = (max(walls) - min(walls)) / statistics.median(walls)
        m = mem[name]
        print(f"{name:40s} {medians[name]:12.0f} {min(walls):8.0f} {max(walls):8.0f} {spread:7.0%} "
              f"{statistics.median(c for _, c in runs):17.0f} {m['peak']:12.0f} {m['peak'] - m['setup']:15.0f}")
    print_hole_share(engine, requests, params, args)
    packed_name, default_name, *baselines = METHODS
    for ours in (default_name, packed_name):
        for name in baselines:
            print(f"{ours} vs {name}: {medians[ours] / medians[name]:.2f}x")
    best_baseline = max(baselines, key=medians.get)
    print(f"faster baseline: {best_baseline} (ratios by {args.clock} time)")
    bound = decode_bound(model, args.n, statistics.mean(lengths) + args.new_tokens / 2, args.device)
    for ours in (default_name, packed_name, *([VLLM_METHOD] if args.vllm else [])):
        print(f"{ours}: {medians[ours] / bound:.1%} of the decode bound ({bound:.0f} tok/s at {args.n} rows)")
    if args.vllm:
        print(f"vllm-cpu vs HFEngine default: {medians[VLLM_METHOD] / medians[default_name]:.2f}x")
        print(f"vllm-cpu vs faster generate: {medians[VLLM_METHOD] / medians[best_baseline]:.2f}x")
    print(f"ratio vs num_return_sequences: {medians[packed_name] / medians[best_baseline]:.2f}x")


def decode_bound(model, rows: int, context: float, device: str = "cpu") -> float:
    """Generated tokens/s if a decode step cost only its memory traffic, at ``rows`` rows per step.

    A step reads every weight once and each row's KV cache (``context`` positions, all layers), at
    the copy bandwidth measured in this process (host memory, or the GPU's for ``device="cuda"``).
    More rows per step (packing) raise the bound, so it is computed at the default mode's ``n``
    rows; the packed mode can exceed it.
    """
    from _limits import copy_bandwidth

    cfg = model.config
    size = next(model.parameters()).element_size()
    weights = sum(p.numel() for p in model.parameters()) * size
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_position = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * size
    step_bytes = weights + rows * context * kv_per_position
    # copy_bandwidth counts read + write bytes; a decode step only reads.
    return rows * copy_bandwidth(device=device) / step_bytes


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
