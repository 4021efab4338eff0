"""Benchmark: verdict parsing time on adversarial text grows linearly with its length.

A judge's output is data a policy or a user can shape. Each shape below is built at 10,000, 100,000
and 1,000,000 characters and parsed in both modes (best of ``--repeats``); the table gives the time
per character at each size and its growth from the smallest to the largest text: about 1x for a
linear parser, 100x for a quadratic one. The last line is the worst growth. (This was a timed ratio test; timings belong in benchmarks, so the test now
pins the verdicts these shapes parse to, and this file measures the growth.)

    OMP_NUM_THREADS=1 .venv/bin/python bench/parse_scaling.py [--repeats 5]

Last line: ``worst growth of the time per character, 10k -> 1M characters: N.Nx (linear: 1x, quadratic: 100x)``.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

from conj_train.verdicts import parse_verdict

ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "deep braces": lambda n: "{" * n + "}",
    "brace after closer": lambda n: "}" + "{" * n,
    "spaced braces": lambda n: "{ " * (n // 2) + "}",
    "repeated keys, no digit": lambda n: '"更好的回答":' * (n // 8),
    "unquoted keys": lambda n: "更好的回答" * (n // 5) + "1",
    "unclosed quote": lambda n: '{"原因": "' + "他说" * (n // 2) + "}",
    "many objects": lambda n: '{"a": 0}' * (n // 8),
    "nested valid prefix": lambda n: '{"a": ' * (n // 6) + '"x',
    "raw quotes": lambda n: '{"原因":"' + '他"说"\n' * (n // 5) + "}",
    "fences": lambda n: "```json" * (n // 7),
    "digits before key": lambda n: "1" * n + "回答",
    "escapes": lambda n: '{"原因": "' + "\\n" * (n // 2) + "}",
    # Every '{' starts a valid prefix that runs to the end: quadratic without the decode caps.
    "nested prefixes, long array": lambda n: '{"a":' * (n // 40) + "[" + "1," * (n * 7 // 16),
}
SIZES = (10_000, 100_000, 1_000_000)


def best_time(text: str, mode: str, repeats: int) -> float:
    """Fastest of ``repeats`` parses of ``text`` in ``mode``, seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        parse_verdict(text, mode)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    """Time every shape at both sizes in both modes; print the growths, the worst one last."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="parses per shape, size and mode (best kept)")
    args = ap.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}; sizes {SIZES}, best of {args.repeats}")
    print(f"{'shape':30s} {'mode':8s} " + " ".join(f"{n // 1000:>6d}k ns/ch" for n in SIZES) + f" {'growth':>7s}")
    worst = 0.0
    for name, make in ADVERSARIAL.items():
        for mode in ("strict", "lenient"):
            per_char = [best_time(make(n), mode, args.repeats) / n * 1e9 for n in SIZES]
            growth = per_char[-1] / per_char[0]
            worst = max(worst, growth)
            print(f"{name:30s} {mode:8s} " + " ".join(f"{c:12.1f}" for c in per_char) + f" {growth:6.1f}x")
    print(f"worst growth of the time per character, 10k -> 1M characters: {worst:.1f}x "
          "(linear: 1x, quadratic: 100x)")


if __name__ == "__main__":
    main()
