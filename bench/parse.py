"""Benchmark: strict verdict parsing of synthetic judgments, against the original algorithm.

Generates ``--n`` judgments with a realistic mix (70% clean JSON with a Chinese rationale of
100-600 characters, 10% fenced json, 8% English keys, 5% reshaped hint outputs with raw newlines
and quotes, 5% truncated or free text, 2% adversarial strings of 500-2,000 characters), parses them all with
``parse_verdict(mode="strict")`` on one process, then runs a straightforward reimplementation of
the original Con-J training parser (``json.loads`` attempts and its non-greedy regular expressions)
on a ``--baseline-n`` subset in the same process. The baseline skips the adversarial judgments,
on which its regexes take quadratic time; a separate probe times both parsers on one adversarial
shape at two sizes to show it. The last line printed is ``parse rate: N judgments/s``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/parse.py --n 1000000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections import Counter
from collections.abc import Callable

from _original import original_strict  # bench/ is on sys.path when run as a script

from conj_train.verdicts import parse_verdict

MIX = (("clean", 70), ("fenced", 10), ("english", 8), ("hint", 5), ("broken", 5), ("adversarial", 2))
CHUNK = 20_000

_ZH = (
    "回答1", "回答2", "的计算过程", "是正确的", "存在明显错误", "更加完整", "覆盖了问题的所有方面", "逻辑清晰",
    "语言流畅", "但是", "因此", "相比之下", "没有回答用户的问题", "给出了具体的例子", "准确性更高", "连贯性较差",
    "，", "，", "。", "。", "；", "“关键步骤”", "{x}", "提到了", "步骤", "结论", "用户", "需要", "解释",
)  # fmt: skip
_EN = (
    "Answer 1", "Answer 2", "is correct", "contains a factual error", "is more complete", "covers every",
    "aspect of the question", "is clearer", "however", "therefore", "in contrast", "does not address",
    "the user's request", "gives a concrete example", ",", ".", ".", "the final result", "step",
)  # fmt: skip


def _zh_text(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    parts: list[str] = []
    size = 0
    while size < target:
        piece = rng.choice(_ZH)
        parts.append(piece)
        size += len(piece)
    return "".join(parts)[:target]


def _en_text(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    parts: list[str] = []
    size = 0
    while size < target:
        piece = rng.choice(_EN)
        parts.append(piece)
        size += len(piece) + 1
    return " ".join(parts)[:target]


def _adversarial(rng: random.Random) -> str:
    n = rng.randint(500, 2_000)  # about what 512 new tokens can produce
    shape = rng.randrange(7)
    if shape == 0:
        return "}" + "{" * n
    if shape == 1:
        return '"更好的回答":' * (n // 8)
    if shape == 2:
        return '{"原因": "' + "他说" * (n // 2) + "}"
    if shape == 3:
        return '{"a": 0}' * (n // 8)
    if shape == 4:
        return "{ " * (n // 2) + "}"
    if shape == 5:
        return "```json" * (n // 7)
    return '{"原因":"' + '他"说"\n' * (n // 5)


def make_judgment(rng: random.Random, kind: str) -> str:
    """One synthetic judge output of the given kind."""
    k = rng.choice((1, 2))
    if kind == "clean":
        body = json.dumps({"原因": _zh_text(rng, 100, 600), "更好的回答": k}, ensure_ascii=False)
        return (" " + body) if rng.random() < 0.5 else body
    if kind == "fenced":
        body = json.dumps({"原因": _zh_text(rng, 100, 600), "更好的回答": k}, ensure_ascii=False, indent=2)
        return f"以下是我的判断：\n```json\n{body}\n```"
    if kind == "english":
        return json.dumps({"reason": _en_text(rng, 100, 600), "better_answer": k})
    if kind == "hint":
        raw = _zh_text(rng, 100, 600).replace("。", "。\n").replace("“", '"').replace("”", '"')
        return '{"原因":"' + raw + '","更好的回答": ' + str(k) + "}"
    if kind == "broken":
        if rng.random() < 0.5:
            full = json.dumps({"原因": _zh_text(rng, 100, 600), "更好的回答": k}, ensure_ascii=False)
            return " " + full[: rng.randint(5, len(full) - 20)]
        return f"我认为回答{k}更好，因为" + _zh_text(rng, 50, 300)
    return _adversarial(rng)


def make_corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` judgments and their kinds, drawn with MIX's weights."""
    rng = random.Random(seed)
    kinds = rng.choices([m[0] for m in MIX], weights=[m[1] for m in MIX], k=n)
    return [make_judgment(rng, kind) for kind in kinds], kinds


def _strict(text: str) -> int | None:
    return parse_verdict(text, "strict").verdict


def _time(fn: Callable[[str], int | None], texts: list[str]) -> tuple[float, list[int | None]]:
    t0 = time.perf_counter()
    out = [fn(t) for t in texts]
    return time.perf_counter() - t0, out


def _best(fn: Callable[[str], int | None], text: str, repeats: int) -> float:
    return min(_time(fn, [text])[0] for _ in range(repeats))


def _repeated_key(n: int) -> str:
    return '"更好的回答":' * (n // 8)


def main() -> None:
    """Run the benchmark and print its figures; the last line is the strict parse rate."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="judgments for the strict parser")
    ap.add_argument("--baseline-n", type=int, default=100_000, help="subset size for the baseline")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, n={args.n}, seed={args.seed}")

    # Generated and parsed in chunks so memory stays small; only parsing is timed.
    parse_s = 0.0
    chars = 0
    kinds_seen: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    subset: list[str] = []
    subset_kinds: list[str] = []
    subset_adversarial = 0
    for chunk_no, start in enumerate(range(0, args.n, CHUNK)):
        texts, kinds = make_corpus(min(CHUNK, args.n - start), args.seed * 1_000_003 + chunk_no)
        dt, out = _time(_strict, texts)
        parse_s += dt
        chars += sum(map(len, texts))
        kinds_seen.update(kinds)
        verdicts.update(str(v) for v in out)
        for text, kind in zip(texts, kinds, strict=True):
            if len(subset) + subset_adversarial >= args.baseline_n:
                break
            if kind == "adversarial":
                subset_adversarial += 1
            else:
                subset.append(text)
                subset_kinds.append(kind)
    rate = args.n / parse_s
    print(f"mix: {dict(sorted(kinds_seen.items()))}; mean length {chars / args.n:.0f} chars")
    print(f"strict verdicts: {dict(sorted(verdicts.items()))}")
    print(f"strict parser: {args.n} judgments in {parse_s:.2f} s = {rate:,.0f}/s")

    ours_s, ours = _time(_strict, subset)
    base_s, base = _time(original_strict, subset)
    same = [a == b for a, b in zip(ours, base, strict=True)]
    zh = [s for s, kind in zip(same, subset_kinds, strict=True) if kind != "english"]
    print(
        f"subset of {len(subset)} (first {args.baseline_n} generated, {subset_adversarial} adversarial "
        f"left out of it): strict {len(subset) / ours_s:,.0f}/s, original {len(subset) / base_s:,.0f}/s "
        f"(x{base_s / ours_s:.2f})"
    )
    print(
        f"same verdict as the original: {sum(same) / len(same):.2%} of the subset, "
        f"{sum(zh) / len(zh):.2%} without English-key judgments (the original reads only the Chinese key)"
    )
    for name, make in (("'}' + '{'*n", lambda n: "}" + "{" * n), ("'\"更好的回答\":'*(n/8)", _repeated_key)):
        for size in (5_000, 10_000):
            text = make(size)
            print(
                f"adversarial {name}, n={size}: strict {_best(_strict, text, 5) * 1e3:.2f} ms, "
                f"original {_best(original_strict, text, 1) * 1e3:.1f} ms"
            )
    print(f"parse rate: {rate:.0f} judgments/s")


if __name__ == "__main__":
    main()
