"""Benchmark: stage-2 classification (strict parse + length rule) and pair building, end to end.

Synthesises ``--pairs`` pair ids x (8 repeated + 1 hint_correct + 1 hint_wrong) judgments (1,000,000
by default) with a realistic mix: each pair has a difficulty (how often the judge is right); repeated
samples are clean JSON with a Chinese rationale of 100-600 characters (some fenced, some with a
leading space), about 8% unparseable (free text, JSON cut off by the token limit). Hint outputs
follow the hint with 95% probability (paper reading: JSON written by the model) and have the same
rationale spread, so a few percent exceed 600 characters and go through the length rule.
``--long-hint-share`` adds hint outputs with a 600-740 character rationale (long enough for the rule,
short enough to fit 512 Qwen2 tokens; a longer one is cut off at sampling, is not valid JSON and
skips the rule). The rule tokenizes with the tiny model's tokenizer, which has Qwen2's pre-tokenizer
regex, the dominant cost (1-3 ms per 700 CJK characters). Generation runs in chunks and is not
timed; ``classify_judgment`` + ``build_pairs`` (and the final split and balancing) are.

The baseline, in the same process, is a straightforward reimplementation of the original Con-J
script's per-``test_id`` loop (``json.loads`` + its non-greedy regexes, global ``random`` shuffles,
the same length rule and tokenizer) on the first ``--baseline-pairs`` pairs. The last line printed is
``filter rate: N judgments/s``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/filter.py --pairs 100000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from typing import Any

# One core: the tokenizer's batch calls would otherwise run on a thread pool.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _original import original_strict  # bench/ is on sys.path when run as a script

import conj_train.filter.rules
from conj_train.filter.pairs import Pair, balance_by_label, build_pairs, split_of
from conj_train.filter.rules import LengthRule, PairRules, classify_judgments
from conj_train.filter.run import gc_paused
from conj_train.sample.files import CLASSIFY_BATCH
from conj_train.tokens import decode_ids, encode_ids, encode_many

CHUNK_PAIRS = 5_000
N_REPEATED = 8
_ZH = (
    "回答1", "回答2", "的计算过程", "是正确的", "存在明显错误", "更加完整", "覆盖了问题的所有方面", "逻辑清晰",
    "语言流畅", "但是", "因此", "相比之下", "没有回答用户的问题", "给出了具体的例子", "准确性更高", "连贯性较差",
    "，", "，", "。", "；", "“关键步骤”", "提到了", "步骤", "结论", "用户", "需要", "解释",
)  # fmt: skip
# Share of pairs by how often the judge is right on them (easy ... adversarial).
DIFFICULTY = ((0.95, 40), (0.7, 30), (0.4, 20), (0.1, 10))


def _zh(rng: random.Random, low: int, high: int) -> str:
    target = rng.randint(low, high)
    parts: list[str] = []
    size = 0
    while size < target:
        piece = rng.choice(_ZH)
        parts.append(piece)
        size += len(piece)
    return "".join(parts)[:target]


def _judgment_text(rng: random.Random, verdict: int, long_share: float = 0.0) -> tuple[str, str]:
    """(text, finish_reason) of a parseable judgment with ``verdict``."""
    low, high = (600, 740) if rng.random() < long_share else (100, 600)
    body = json.dumps({"原因": _zh(rng, low, high), "更好的回答": verdict}, ensure_ascii=False)
    r = rng.random()
    if r < 0.1:
        return f"以下是我的判断：\n```json\n{body}\n```", "stop"
    return (" " + body if r < 0.5 else body), "stop"


def _unparseable_text(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.6:
        full = json.dumps({"原因": _zh(rng, 300, 700), "更好的回答": 1}, ensure_ascii=False)
        return " " + full[: rng.randint(20, len(full) - 20)], "length"
    return "我认为" + _zh(rng, 50, 300), "stop"


def make_chunk(rng: random.Random, start: int, n_pairs: int,
               long_hint_share: float) -> list[tuple[str, int, list[dict]]]:
    """``n_pairs`` synthetic pair ids with their judgment records."""
    out = []
    for p in range(start, start + n_pairs):
        pid, label = f"pair-{p:07d}", rng.choice((1, 2))
        right = rng.choices([d[0] for d in DIFFICULTY], weights=[d[1] for d in DIFFICULTY])[0]
        recs = []
        for i in range(N_REPEATED):
            if rng.random() < 0.08:
                text, finish = _unparseable_text(rng)
            else:
                text, finish = _judgment_text(rng, label if rng.random() < right else 3 - label)
            recs.append({"judgment_id": f"{pid}:repeated:{i}", "kind": "repeated", "index": i, "text": text,
                         "finish_reason": finish})
        for kind, hinted in (("hint_correct", label), ("hint_wrong", 3 - label)):
            r = rng.random()
            if r < 0.02:
                text, finish = _unparseable_text(rng)
            else:
                text, finish = _judgment_text(rng, hinted if r < 0.97 else 3 - hinted, long_hint_share)
            recs.append({"judgment_id": f"{pid}:{kind}:0", "kind": kind, "index": 0, "text": text,
                         "finish_reason": finish})
        out.append((pid, label, recs))
    return out


class TokenizerTimer:
    """Time spent in the length rule's tokenizer calls (``encode_many`` and ``decode_ids`` as
    :mod:`conj_train.filter.rules` calls them), installed around those two names while it is active;
    ``calls`` counts the texts encoded."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def _timed(self, fn: Any, count: bool) -> Any:
        def wrapper(tokenizer: Any, arg: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(tokenizer, arg)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += len(arg) if count else 0
        return wrapper

    def __enter__(self) -> TokenizerTimer:
        conj_train.filter.rules.encode_many = self._timed(encode_many, True)
        conj_train.filter.rules.decode_ids = self._timed(decode_ids, False)
        return self

    def __exit__(self, *exc: object) -> None:
        conj_train.filter.rules.encode_many, conj_train.filter.rules.decode_ids = encode_many, decode_ids


class TimedTokenizer:
    """The original loop's tokenizer (``encode`` + ``decode`` of whole texts), timed."""

    def __init__(self, tok: Any) -> None:
        self.tok, self.seconds, self.calls = tok, 0.0, 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Timed ``encode``."""
        t0 = time.perf_counter()
        try:
            return encode_ids(self.tok, text)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def decode(self, ids: list[int]) -> str:
        """Timed ``decode``."""
        t0 = time.perf_counter()
        try:
            return decode_ids(self.tok, ids)
        finally:
            self.seconds += time.perf_counter() - t0


def run_ours(chunk: list[tuple[str, int, list[dict]]], tokenizer: Any, rules: PairRules,
             rule: LengthRule) -> list[Pair]:
    """Classification + pair building of one chunk, as the stage does it."""
    items = [(r, label) for _, label, recs in chunk for r in recs]
    judgments: list = []
    for start in range(0, len(items), CLASSIFY_BATCH):  # batches as the stage reads them
        judgments += classify_judgments(items[start : start + CLASSIFY_BATCH], tokenizer=tokenizer,
                                        length_rule=rule)
    pairs: list[Pair] = []
    start = 0
    for pid, label, recs in chunk:
        pairs += build_pairs(pid, label, judgments[start : start + len(recs)], rules).pairs
        start += len(recs)
    return pairs


# --- the original script's loop, reimplemented from docs/method.md#pair-construction, as the baseline ------

def original_evaluate(text: str) -> int | str:
    """The original training parser, with its ``'None'`` for an unparseable judgment."""
    verdict = original_strict(text)
    return "None" if verdict is None else verdict


def _original_split(items: list[dict], label: int, tokenizer: Any, length_check: bool) -> dict[str, list]:
    out: dict[str, list] = {"positive": [], "negative": [], "unknown": []}
    for item in items:
        result = original_evaluate(item["text"])
        if length_check and len(item["text"]) > 600:
            try:
                obj = json.loads(item["text"])
                ids = tokenizer.encode(obj["原因"], add_special_tokens=False)
                if len(ids) > 400:
                    head = tokenizer.decode(ids[:400])
                    cut = max(head.rfind("。"), head.rfind("."))
                    if cut == -1:
                        result = "negative"
                        item = {**item, "text": tokenizer.decode(ids[:512])}
                    else:
                        obj["原因"] = head[:cut]
                        item = {**item, "text": json.dumps(obj, ensure_ascii=False)}
            except (ValueError, KeyError, TypeError):
                pass
        key = "positive" if result == label else "unknown" if result == "None" else "negative"
        out[key].append(item)
    return out


def run_original(chunk: list[tuple[str, int, list[dict]]], tokenizer: Any) -> list[tuple]:
    """The original per-test_id loop; returns its pairs as (test_id, type, chosen, rejected, label)."""
    random.seed(2021)
    out: list[tuple] = []
    for pid, label, recs in chunk:
        best = _original_split([r for r in recs if r["kind"] == "repeated"], label, tokenizer, False)
        good = _original_split([r for r in recs if r["kind"] == "hint_correct"], label, tokenizer, True)
        bad = _original_split([r for r in recs if r["kind"] == "hint_wrong"], label, tokenizer, True)
        pos, neg, unk = best["positive"], best["negative"], best["unknown"]
        random.shuffle(pos)
        random.shuffle(neg)
        if pos and neg:
            for i in range(min(len(pos), len(neg), 3)):
                out.append((pid, "best_of_n", pos[i]["text"], neg[i]["text"], label))
        if pos and unk:
            out.append((pid, "best_of_n_positive2unknown", pos[0]["text"], unk[0]["text"], label))
        if good["positive"] and bad["negative"]:
            out.append((pid, "preamble", good["positive"][0]["text"], bad["negative"][0]["text"], label))
        elif not good["negative"] and not bad["positive"]:
            chosen = (good["positive"] or good["unknown"])[0]
            rejected = (bad["negative"] or bad["unknown"])[0]
            out.append((pid, "preamble2unknown", chosen["text"], rejected["text"], label))
    return out


def main() -> None:
    """Run the benchmark; the last line is the end-to-end filter rate."""
    from transformers import AutoTokenizer

    from conj_train.model_builders.tiny import build_tiny_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100_000, help="pair ids (x10 judgments)")
    ap.add_argument("--baseline-pairs", type=int, default=10_000, help="pair ids for the original's loop")
    ap.add_argument("--long-hint-share", type=float, default=0.0,
                    help="share of hint outputs with a 600-740 character rationale (length rule)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_judgments = args.pairs * (N_REPEATED + 2)
    print(f"python {platform.python_version()} on {platform.machine()}, pairs={args.pairs}, "
          f"judgments={n_judgments}, long hint share={args.long_hint_share}, seed={args.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        tok = AutoTokenizer.from_pretrained(build_tiny_model(f"{tmp}/tiny", seed=0))

    rules, rule = PairRules(), LengthRule()
    rng = random.Random(args.seed)
    ours = TokenizerTimer()
    ours_s = 0.0
    pairs: list[Pair] = []
    chars = 0
    subset: list[tuple[str, int, list[dict]]] = []
    for start in range(0, args.pairs, CHUNK_PAIRS):
        chunk = make_chunk(rng, start, min(CHUNK_PAIRS, args.pairs - start), args.long_hint_share)
        chars += sum(len(r["text"]) for _, _, recs in chunk for r in recs)
        if len(subset) < args.baseline_pairs:
            subset += chunk[: args.baseline_pairs - len(subset)]
        t0 = time.perf_counter()
        with gc_paused(), ours:
            pairs += run_ours(chunk, tok, rules, rule)
        ours_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    train = [p for p in pairs if split_of(p.pair_id, 0.05) == "train"]
    balanced, _ = balance_by_label(train, 2021)
    ours_s += time.perf_counter() - t0
    rate = n_judgments / ours_s
    print(f"mean judgment length {chars / n_judgments:.0f} chars")
    print(f"ours: {len(pairs)} pairs {dict(sorted(Counter(p.pair_type for p in pairs).items()))}; "
          f"{len(balanced)} train pairs after balancing")
    print(f"ours: {n_judgments} judgments in {ours_s:.2f} s = {rate:,.0f}/s; of which tokenizer "
          f"{ours.seconds:.2f} s ({ours.calls} encodes); without it {n_judgments / (ours_s - ours.seconds):,.0f}/s")

    n_sub = sum(len(recs) for _, _, recs in subset)
    sub_tok, orig_tok = TokenizerTimer(), TimedTokenizer(tok)
    t0 = time.perf_counter()
    with gc_paused(), sub_tok:
        sub_ours = Counter(p.pair_type for p in run_ours(subset, tok, rules, rule))
    sub_ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sub_orig = Counter(p[1] for p in run_original(subset, orig_tok))
    orig_s = time.perf_counter() - t0
    print(f"subset of {len(subset)} pairs ({n_sub} judgments): ours {n_sub / sub_ours_s:,.0f}/s, "
          f"original loop {n_sub / orig_s:,.0f}/s (x{orig_s / sub_ours_s:.2f}); without tokenizer time "
          f"ours {n_sub / (sub_ours_s - sub_tok.seconds):,.0f}/s, original {n_sub / (orig_s - orig_tok.seconds):,.0f}/s")
    print(f"  pairs by type, ours {dict(sorted(sub_ours.items()))}")
    print(f"  pairs by type, original {dict(sorted(sub_orig.items()))}")
    print(f"filter rate: {rate:.0f} judgments/s")


if __name__ == "__main__":
    main()
