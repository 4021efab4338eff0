"""Judge throughput as an RL reward: ``JudgeReward`` on the ``hf`` engine vs one ``generate`` call per judgment.

The workload is a GRPO step's reward call: ``--prompts`` questions with ``--completions`` completions
each (deterministic English text of different lengths, about ``--completion-tokens`` tokens), judged
by a Con-J judge (template ``conj-en``, greedy, ``--max-new-tokens`` new tokens after the template's
prefill). ``--pairing reference`` (default): each completion against its question's reference
answer, both orders (2 judgments per completion); ``--pairing group``: round-robin within each group,
both orders (G x (G - 1) judgments per group).

Rows, all in this process on one loaded model, interleaved with a rotating order after a warm-up round;
the table gives the median of the measured rounds (``--rounds``) and their spread ((max - min) / median):

- ``JudgeReward`` (``score="verdict"``) called once over all completions, the engine packed
  (``batch_tokens``, ``--batch-tokens``: every judge prompt's row in few forwards);
- the same with the engine's default mode (one request per forward: one row, greedy);
- the packed row with ``score="probability"`` (``Judge.from_pretrained(..., probability=True)``: the
  verdict probability read by :class:`conj_train.inference.probability.VerdictScorer` after the
  generation), to price reading it;
- the baseline a user would write: for each judgment, the prompt built by the Judge's own methods
  (``Judge.render(Judge.prompt_text(...)) + Judge.prefill``), tokenized, one
  ``model.generate(do_sample=False, max_new_tokens=..., eos_token_id=<the engine's stop ids>)``
  (transformers' SDPA attention, as ``generate`` gives it), parsed with
  :func:`conj_train.verdicts.parse_verdict` in the judge's mode.

Builds a tiny random Qwen2 (``conj_train.model_builders.tiny``) in a temporary folder (a smoke run,
its verdicts mostly unparsed), or loads ``--model`` (e.g. SmolLM2-135M-Instruct from ``conj real-model``).

    OMP_NUM_THREADS=1 python bench/judge_reward.py [--rounds 5 --threads 1 --pairing group]
    OMP_NUM_THREADS=1 python bench/judge_reward.py --model runs/smollm2/model --dtype bfloat16

Prints the judge texts and verdicts that agree between the rows (greedy on both sides: equal up to
the rounding of different batch shapes and attention kernels; reported, not asserted), the seconds
per judgment that reading the verdict probability adds, and each row's share of the same-process
GEMM rate (judging FLOPs: prefill of every judge prompt, the decode steps, causal attention; the
probability read's extra forward not counted). Last line: ``ratio vs generate per judgment: N.NNx``
(the packed ``JudgeReward`` row, judgments/s). ``--time-limit S`` measures fewer rounds (at least
1) rather than run past S seconds.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _device  # bench/ is on sys.path when run as a script
from _models import stock_attention

# Answers and questions are slices of this text, at different offsets and lengths.
FILLER = (
    "The capital of France is Paris, which has been the seat of its government for centuries. "
    "To compute the area of a circle, multiply pi by the square of the radius; for a radius of 3 cm "
    "that gives about 28.27 square centimetres. Water boils at 100 degrees Celsius at sea level, but "
    "at lower pressure, on a mountain, it boils at a lower temperature, so pasta takes longer to cook. "
    "A good answer states the result first, then explains the steps, and checks the units at the end. "
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplasts. "
    "In Python, a list comprehension builds a new list from an iterable in a single readable expression. "
)
METHODS = ("JudgeReward, packed (batch_tokens)", "JudgeReward, one request per forward",
           "JudgeReward, packed + probability", "generate, one call per judgment")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="a causal-LM folder (e.g. `conj real-model` output) instead of the tiny random Qwen2")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="which judgments/s the ratios use; cpu (process time) is steady under other load")
    ap.add_argument("--hidden", type=int, default=64, help="the tiny random model's hidden size")
    ap.add_argument("--layers", type=int, default=2, help="the tiny random model's layers")
    ap.add_argument("--prompts", type=int, default=4, help="questions (GRPO prompts) per reward call")
    ap.add_argument("--completions", type=int, default=8, help="completions per question (GRPO num_generations)")
    ap.add_argument("--completion-tokens", type=int, default=96,
                    help="about this many tokens per completion (lengths spread +-25%%) and per reference")
    ap.add_argument("--question-tokens", type=int, default=32, help="about this many tokens per question")
    ap.add_argument("--pairing", choices=("reference", "group"), default="reference",
                    help="reference: each completion vs its question's reference answer; group: round-robin "
                         "within each question's completions (both orders either way)")
    ap.add_argument("--template", default="conj-en", help="the judge prompt template")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="the judge's longest judgment")
    ap.add_argument("--batch-tokens", type=int, default=1 << 16,
                    help="the packed rows' engine batch_tokens (rows x (longest prompt + new tokens) per pack)")
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds after the warm-up round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds for the whole run: measure fewer rounds (at least 1) rather than run past it")
    args = ap.parse_args()
    if args.pairing == "group" and args.completions < 2:
        ap.error("--pairing group needs --completions >= 2")
    return args


@dataclass
class Workload:
    """One reward call's inputs, and the judgments it implies in the order the baseline makes them."""

    prompts: list[str]  # one per completion (each question repeated G times, as TRL passes them)
    completions: list[str]
    references: list[str]  # one per completion
    items: list[tuple[str, str, str]]  # (question, answer 1, answer 2) per judgment


def make_workload(tokenizer: Any, args: argparse.Namespace) -> Workload:
    """Deterministic questions, completions of different lengths and references (module docstring)."""
    g, t = args.completions, args.completion_tokens
    ids = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    ids = ids * (2 + (2 * t + args.question_tokens) // len(ids))  # longer than any slice, under the context

    def text(offset: int, length: int) -> str:
        offset %= len(ids) - length - 1
        return tokenizer.decode(ids[offset:offset + length]).strip()

    questions = [f"Question {p + 1}: {text(101 * p, args.question_tokens)}?" for p in range(args.prompts)]
    references = [text(53 + 211 * p, t) for p in range(args.prompts)]
    prompts, completions, refs, items = [], [], [], []
    for p, q in enumerate(questions):
        group = [text(17 * (p * g + c) + 7, t - t // 4 + (t // 2) * c // max(g - 1, 1)) for c in range(g)]
        prompts += [q] * g
        completions += group
        refs += [references[p]] * g
        if args.pairing == "reference":
            for a in group:
                items += [(q, a, references[p]), (q, references[p], a)]
        else:
            for i in range(g):
                for j in range(i + 1, g):
                    items += [(q, group[i], group[j]), (q, group[j], group[i])]
    return Workload(prompts, completions, refs, items)


@dataclass
class Run:
    """What one method produced in one call: per judge prompt (user text), its text and verdict, and
    per judgment (prompt tokens incl. prefill, generated tokens)."""

    texts: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, int | None] = field(default_factory=dict)
    shapes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def generated(self) -> int:
        return sum(g for _, g in self.shapes)


def recording_judge_class() -> type:
    """A :class:`~conj_train.inference.judge.Judge` that keeps its last ``judge_prompts`` call, so the
    bench can read the reward's verdicts and token counts (``JudgeReward`` returns only rewards)."""
    from conj_train.inference.judge import Judge

    class RecordingJudge(Judge):
        last: tuple[list[str], list[Any]] = ([], [])

        def judge_prompts(self, prompts: Sequence[str], *args: Any, **kwargs: Any) -> list[Any]:
            out = super().judge_prompts(prompts, *args, **kwargs)
            self.last = (list(prompts), out)
            return out

    return RecordingJudge


@dataclass
class Bench:
    """The loaded judge, the workload and the four methods (each returns a :class:`Run`)."""

    judge: Any
    work: Workload
    methods: dict[str, Callable[[], Run]]


def set_up(args: argparse.Namespace, model_dir: str | Path) -> Bench:
    """Load the judge from ``model_dir``, build the workload, define the methods."""
    import torch
    from transformers import GenerationConfig

    from conj_train.inference.judge_reward import JudgeReward
    from conj_train.verdicts import parse_verdict

    judge = recording_judge_class().from_pretrained(
        str(model_dir), "hf", dtype=args.dtype, device=args.device, threads=args.threads, probability=True,
        engine_options={"batch_tokens": args.batch_tokens}, template=args.template,
        max_new_tokens=args.max_new_tokens,
    )
    plain = copy.copy(judge)  # same engine and model, no probability read
    plain.scorer = None
    engine, tok, model = judge.engine, judge.tokenizer, judge.engine.model
    work = make_workload(tok, args)
    options = {"pairing": args.pairing, "num_generations": args.completions if args.pairing == "group" else None}
    reward_verdict = JudgeReward(plain, score="verdict", **options)
    reward_probability = JudgeReward(judge, score="probability", **options)
    # Prompt tokens (with the prefill) per judge prompt, counted once outside the timed calls.
    prompt_tokens = {}
    for q, a1, a2 in work.items:
        text = judge.prompt_text(q, a1, a2)
        prompt_tokens[text] = engine.count_tokens(judge.render(text) + judge.prefill)

    def run_reward(reward: Any, batch_tokens: int) -> Run:
        engine.batch_tokens = batch_tokens
        reward(work.prompts, work.completions, reference=work.references)
        run = Run()
        for prompt, j in zip(*reward.judge.last, strict=True):
            run.texts[prompt], run.verdicts[prompt] = j.texts[0], j.verdict
            run.shapes.append((prompt_tokens[prompt], j.completion_tokens[0]))
        return run

    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=args.max_new_tokens,
                               eos_token_id=sorted(engine.stop_token_ids),
                               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    def run_generate() -> Run:
        run = Run()
        with torch.inference_mode(), stock_attention(model):
            for q, a1, a2 in work.items:
                prompt = judge.prompt_text(q, a1, a2)
                enc = tok(judge.render(prompt) + judge.prefill, add_special_tokens=False,
                          return_tensors="pt").to(args.device)
                ids = enc["input_ids"]
                out = model.generate(**enc, generation_config=gen_cfg)[0, ids.shape[1]:]
                text = judge.prefill + tok.decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                run.texts[prompt] = text
                run.verdicts[prompt] = parse_verdict(text, judge.parser).verdict
                run.shapes.append((ids.shape[1], len(out)))
        return run

    methods = dict(zip(METHODS, (lambda: run_reward(reward_verdict, args.batch_tokens),
                                 lambda: run_reward(reward_verdict, 0),
                                 lambda: run_reward(reward_probability, args.batch_tokens),
                                 run_generate), strict=True))
    return Bench(judge, work, methods)


def judging_flops(shapes: Sequence[tuple[int, int]], body: int, head: int, config: Any) -> float:
    """FLOPs that judging needs, whatever the implementation: per judgment, the body's matmuls over the
    prompt and every generated token but the last (never fed back), the LM head at the prompt's last
    position and each fed generated token, and causal attention scores and values."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = config.num_attention_heads * head_dim
    total = 0.0
    for p, g in shapes:
        fed = max(g - 1, 0)
        total += 2 * body * (p + fed) + 2 * head * (1 + fed)
        total += 4 * width * config.num_hidden_layers * (p * p / 2 + fed * (p + fed / 2))
    return total


def timed(fn: Callable[[], Run], device: str) -> tuple[Run, float, float]:
    """Run ``fn``; return its run, wall seconds, process CPU seconds."""
    _device.sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    run = fn()
    _device.sync(device)
    return run, time.perf_counter() - wall, time.process_time() - cpu


def agreement(a: Run, b: Run) -> str:
    """How many judge texts and verdicts two runs share, and how many verdicts each parsed."""
    keys = list(b.texts)
    texts = sum(a.texts.get(k) == b.texts[k] for k in keys)
    verdicts = sum(k in a.verdicts and a.verdicts[k] == b.verdicts[k] for k in keys)
    parsed_a = sum(v is not None for v in a.verdicts.values())
    parsed_b = sum(v is not None for v in b.verdicts.values())
    return (f"texts equal {texts}/{len(keys)}, verdicts equal {verdicts}/{len(keys)} "
            f"(parsed {parsed_a} vs {parsed_b})")


def main() -> None:
    """Build or load the judge, run the four methods interleaved, print judgments/s and the ratio."""
    started = time.perf_counter()
    args = parse_args()
    import torch
    from _limits import GEMM_SIZE, gemm_flops, matmul_parameters

    _device.check(args.device, args.clock)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir: str | Path = args.model
        else:
            from conj_train.model_builders.tiny import build_tiny_model

            model_dir = build_tiny_model(Path(tmp) / "model", hidden=args.hidden, layers=args.layers, seed=0)
        bench = set_up(args, model_dir)
    judge, work, methods = bench.judge, bench.work, bench.methods
    model = judge.engine.model
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    gemm = gemm_flops(getattr(torch, args.dtype), device=args.device, clock=clock)
    body, head = matmul_parameters(model)
    names = list(METHODS)
    n = len(work.items)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    first: dict[str, Run] = {}
    deadline = started + args.time_limit if args.time_limit else None
    for rep in range(args.rounds + 1):
        round_start = time.perf_counter()
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            run, wall, cpu = timed(methods[name], args.device)
            if len(run.shapes) != n:
                raise SystemExit(f"{name}: {len(run.shapes)} judgments, expected {n}")
            first.setdefault(name, run)
            if rep:  # round 0 warms up
                times[name].append((wall, cpu))
        last_round = time.perf_counter() - round_start
        if deadline is not None and 1 <= rep < args.rounds and time.perf_counter() + last_round > deadline:
            print(f"time limit: {rep} of {args.rounds} rounds measured")
            break
    measured = len(times[names[0]])

    packed, default, probability, baseline = names
    lengths = [p for p, _ in first[baseline].shapes]
    answer_tokens = [judge.engine.count_tokens(c) for c in work.completions]
    label = args.model or f"tiny random Qwen2 hidden {args.hidden} layers {args.layers}"
    print(f"model {label} ({args.dtype}); {args.prompts} question(s) x {args.completions} completions of "
          f"{min(answer_tokens)}-{max(answer_tokens)} tokens, pairing {args.pairing}, both orders: {n} "
          f"judgments per reward call; judge prompts {min(lengths)}-{max(lengths)} tokens (mean "
          f"{statistics.mean(lengths):.0f}, template {args.template} + prefill), greedy, max_new_tokens "
          f"{args.max_new_tokens}; packed batch_tokens {args.batch_tokens}; {args.threads} thread(s), "
          f"{measured} rounds after warm-up; load average {os.getloadavg()}")
    print(_device.describe(args.device))
    print(f"same-process GEMM {GEMM_SIZE[args.device]}^3 {args.dtype}: {gemm / 1e9:.0f} GFLOP/s; clock "
          f"{args.clock} (judgments/s, min, max, spread, gen tok/s, s/judgment and the ratios; CPU j/s: "
          f"process CPU time)")
    print(f"{'method':36s} {'judgments/s':>11s} {'min':>7s} {'max':>7s} {'spread':>7s} {'CPU j/s':>8s} "
          f"{'gen tok/s':>9s} {'s/judgment':>10s} {'GEMM share':>10s}")
    rate: dict[str, float] = {}
    seconds: dict[str, list[float]] = {}
    for name in names:
        seconds[name] = [c if args.clock == "cpu" else w for w, c in times[name]]
        med = statistics.median(seconds[name])
        rate[name] = n / med
        rates = [n / t for t in seconds[name]]  # per round, on the chosen clock
        spread = (max(rates) - min(rates)) / statistics.median(rates)
        cpu_rate = statistics.median(n / c for _, c in times[name])
        share = judging_flops(first[name].shapes, body, head, model.config) / med / gemm
        print(f"{name:36s} {rate[name]:11.2f} {min(rates):7.2f} {max(rates):7.2f} {spread:7.0%} {cpu_rate:8.2f} "
              f"{first[name].generated / med:9.0f} {med / n:10.4f} {share:10.1%}")
    print("(GEMM share: judging FLOPs (prefill, decode steps, causal attention; the probability read's "
          "forward not counted) per second over the same-process GEMM rate)")
    for name in (packed, default, probability):
        print(f"agreement, {name} vs {baseline}: {agreement(first[name], first[baseline])}")
    added = [(p - v) / n for p, v in zip(seconds[probability], seconds[packed], strict=True)]
    reads = sum(v is not None for v in first[probability].verdicts.values())
    print(f"verdict probability: {statistics.median(added):+.4f} s per judgment (median over rounds of the "
          f"same round's difference, {min(added):+.4f} to {max(added):+.4f}; "
          f"{statistics.median(added) * n / statistics.median(seconds[packed]):+.0%} of the packed verdict row; "
          f"read where a verdict was parsed: {reads}/{n} judgments)")
    for name in (default, probability):
        print(f"{name} vs {baseline}: {rate[name] / rate[baseline]:.2f}x")
    print(f"ratio vs generate per judgment: {rate[packed] / rate[baseline]:.2f}x")


if __name__ == "__main__":
    main()
