"""What an ingestion did: rows read/used, skips by reason, and length percentiles."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

EXAMPLES_PER_REASON = 5


@dataclass
class IngestReport:
    """Counts for one load. Invariant: ``rows_used + sum(skipped.values()) == rows_read``.

    ``pairs`` is the number of records (more than ``rows_used`` when a row holds several pairs, as
    RM-Bench's do); ``kept`` counts, in eval mode, the used rows that training ingestion would have
    skipped, by that reason (a row counts once per reason).
    """

    dataset: str
    format: str = ""
    mode: str = "train"
    rows_read: int = 0
    rows_used: int = 0
    pairs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: dict[str, list[int]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    multi_turn_rows: int = 0
    decontaminated: int = 0

    def skip(self, reason: str, row: int) -> None:
        """Count row ``row`` as skipped for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.skip_examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(row)
        if reason == "contaminated":
            self.decontaminated += 1

    def keep(self, reason: str) -> None:
        """Count a used row that training ingestion would have skipped for ``reason``."""
        self.kept[reason] = self.kept.get(reason, 0) + 1

    @property
    def multi_turn_share(self) -> float:
        """Share of used rows whose prompt has more than one user turn."""
        return self.multi_turn_rows / self.rows_used if self.rows_used else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field plus ``multi_turn_share``."""
        return {**asdict(self), "multi_turn_share": round(self.multi_turn_share, 4)}


@dataclass
class IngestResult:
    """Canonical records plus the report of how they were obtained."""

    records: list[dict]
    report: IngestReport


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank p50/p90/p99 and max of ``values`` (zeros when empty)."""
    if not values:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    ordered = sorted(values)

    def rank(p: float) -> int:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": ordered[-1]}


def length_stats(records: list[dict], tokenizer: Any = None) -> dict[str, dict[str, dict[str, int]]]:
    """Length percentiles of question/chosen/rejected in characters and, with a tokenizer, in tokens."""
    keys = ("question", "chosen", "rejected")
    out = {"chars": {k: percentiles([len(r[k]) for r in records]) for k in keys}}
    if tokenizer is not None:
        out["tokens"] = {}
        for k in keys:
            texts = [r[k] for r in records]
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
            out["tokens"][k] = percentiles([len(x) for x in ids])
    return out
