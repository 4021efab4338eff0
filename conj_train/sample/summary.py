"""Counts and summaries of a sampling run: per shard, merged over shards, and the lines people read.

Apart from :mod:`conj_train.sample.run` (which generates) because these are pure functions of the
judgment records and shard manifests: the merge re-derives the run's counts from the files alone,
and the low-parse warning is shared by the shard summary, the merge and ``conj run``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from conj_train.errors import ConjError
from conj_train.io import iter_jsonl
from conj_train.runs import shard_name
from conj_train.verdicts import parse_verdict


def parseable_by_kind(rows: Iterable[dict]) -> dict[str, list[int]]:
    """Per judgment kind, ``[parseable, total]`` judgments (strict parser, as the filter reads them)."""
    out: dict[str, list[int]] = {}
    for r in rows:
        c = out.setdefault(r["kind"], [0, 0])
        c[0] += parse_verdict(r["text"], "strict").verdict is not None
        c[1] += 1
    return out


def _parse_shares(by_kind: dict[str, list[int]]) -> dict[str, float]:
    return {k: round(ok / n, 4) for k, (ok, n) in sorted(by_kind.items()) if n}


def parse_warning(counts: dict, threshold: float) -> str | None:
    """A loud line when the parseable share (overall or of one kind) is below ``threshold``, else None.

    Few parseable judgments mean few usable pairs, and the pairs built mostly against unparseable
    outputs (README, "Small models": prefill, lower temperature, more new tokens).
    """
    shares = {"all": counts.get("share_parseable", 0.0), **counts.get("share_parseable_by_kind", {})}
    low = {k: v for k, v in shares.items() if v < threshold}
    if not counts.get("judgments") or not low:
        return None
    what = ", ".join(f"{k} {v:.0%}" for k, v in low.items())
    return (f"WARNING: few parseable judgments ({what} < {threshold:.0%}); the judge rarely writes the "
            "template's JSON: set a prefill (e.g. prefill: null for the template's), lower the "
            "temperature or raise max_new_tokens (README, 'Small models')")


def shard_counts(rows: list[dict], pairs: int, skipped: dict, counts: Counter) -> dict:
    """The counts of one finished shard, from its judgment records."""
    by_kind = Counter(r["kind"] for r in rows)
    length = sum(r["finish_reason"] == "length" for r in rows)
    per_kind = parseable_by_kind(rows)
    parseable, total = sum(c[0] for c in per_kind.values()), len(rows)
    out = {
        "pairs": pairs,
        "judgments": len(rows),
        "by_kind": dict(by_kind),
        "finish_length": length,
        "parseable": parseable,
        "parseable_by_kind": {k: c[0] for k, c in sorted(per_kind.items())},
        "share_parseable_by_kind": _parse_shares(per_kind),
        "skipped_pairs": skipped,
    }
    if "fallback_pairs" in counts:
        out["fallback_pairs"] = counts["fallback_pairs"]
    if total:
        out["share_length"] = round(length / total, 4)
        out["share_parseable"] = round(parseable / total, 4)
    return out


def merged_counts(out: Path, world: int, shards: list[dict], *, fallback: bool) -> dict:
    """The counts of a whole run: judgments read back from every shard file (a judgment in two
    shards is a ConjError), the rest summed over the shard manifests ``shards``."""
    seen: set[tuple[str, str, int]] = set()
    total: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    parse_kind: dict[str, list[int]] = {}
    skipped: Counter[str] = Counter()
    for i in range(world):
        for r in iter_jsonl(out / "judgments" / f"{shard_name(i, world)}.jsonl", drop_partial_last_line=True):
            key = (r["pair_id"], r["kind"], int(r["index"]))
            if key in seen:
                raise ConjError(f"{out}: duplicate judgment {key} across shards")
            seen.add(key)
            by_kind[r["kind"]] += 1
            total["finish_length"] += r["finish_reason"] == "length"
    for m in shards:
        total["pairs"] += m["counts"]["pairs"]
        total["parseable"] += m["counts"]["parseable"]
        total["fallback_pairs"] += m["counts"].get("fallback_pairs", 0)
        for k, ok in m["counts"].get("parseable_by_kind", {}).items():
            c = parse_kind.setdefault(k, [0, 0])
            c[0] += ok
            c[1] += m["counts"]["by_kind"].get(k, 0)
        skipped.update(m["counts"].get("skipped_pairs", {}))
    n_j = len(seen)
    counts = {"pairs": total["pairs"], "judgments": n_j, "by_kind": dict(by_kind),
              "finish_length": total["finish_length"], "parseable": total["parseable"],
              "share_length": round(total["finish_length"] / n_j, 4) if n_j else 0.0,
              "share_parseable": round(total["parseable"] / n_j, 4) if n_j else 0.0,
              "parseable_by_kind": {k: c[0] for k, c in sorted(parse_kind.items())},
              "share_parseable_by_kind": _parse_shares(parse_kind),
              "skipped_prompts": dict(skipped)}
    if fallback:
        counts["fallback_pairs"] = total["fallback_pairs"]
    return counts


def warn_now(counts: dict, min_parseable: float) -> None:
    """Print the low-parse warning to stderr at once (``conj run`` prints summaries only at its end)."""
    warning = parse_warning(counts, min_parseable)
    if warning:
        print(warning, file=sys.stderr, flush=True)


def format_summary(counts: dict, min_parseable: float = 0.5) -> str:
    """A few human lines about a finished run, led by a warning when few judgments parse."""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(counts.get("by_kind", {}).items()))
    per_kind = ", ".join(f"{k} {v:.1%}" for k, v in counts.get("share_parseable_by_kind", {}).items())
    lines = [
        f"judgments written: {counts['judgments']} for {counts['pairs']} pairs ({kinds})",
        f"ended by length: {counts.get('share_length', 0):.1%}; "
        f"parseable (strict): {counts.get('share_parseable', 0):.1%}" + (f" ({per_kind})" if per_kind else ""),
    ]
    warning = parse_warning(counts, min_parseable)
    if warning:
        lines.insert(0, warning)
    if counts.get("skipped_prompts"):
        lines.append(f"skipped prompts: {counts['skipped_prompts']}")
    if "fallback_pairs" in counts:
        lines.append(f"pairs given hint samples (fallback): {counts['fallback_pairs']}")
    return "\n".join(lines)


def tracker_metrics(counts: dict) -> dict[str, float | int]:
    """A run's counts as flat tracker keys: the parse rate overall and by judgment kind (strict parser,
    as the filter reads them), judgments by kind, the share that ended by length."""
    out: dict[str, float | int] = {
        "sample/pairs": counts["pairs"], "sample/judgments": counts["judgments"],
        "sample/parse_rate/all": counts.get("share_parseable", 0.0),
        "sample/finish_length_share": counts.get("share_length", 0.0),
    }
    out.update({f"sample/parse_rate/{k}": v for k, v in counts.get("share_parseable_by_kind", {}).items()})
    out.update({f"sample/judgments/{k}": v for k, v in counts.get("by_kind", {}).items()})
    return out
