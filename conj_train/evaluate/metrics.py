"""Pure metric math for pairwise judges (docs/method.md#evaluation-metrics); no model, no files.

A pair is judged in its seeded random order (``first``, the single order RewardBench and Con-J run)
and, with both orders, once more with the answers swapped (``second``). Each order's verdict maps back
to the chosen answer, the rejected answer, or nothing (unparseable, or a tie), which scores 0.5 in the
project's own metrics (Con-J's convention; RewardBench's for generative judges).

The project's metrics, on the pairs whose label names a better answer (tie-labelled rows excluded):

=======================  =====================================================================
``accuracy``             single random-order accuracy (first order; 1 / 0 / 0.5)
``accuracy_avg``         mean over both orders of the per-order score (0.5 when unparsed; LLMBar's
                         ``correct_average`` scores that 0 instead: ``llmbar_accuracy``)
``accuracy_strict``      right in both orders (= LLMBar ``correct_both``; Auto-J's agreement also
                         counts tie rows: ``autoj_agreement``)
``consistency``          both orders valid and naming the same answer (positional agreement; LLMBar's
                         ``equal`` also counts two unparsed verdicts as agreeing: ``llmbar_agreement``)
``agree_accuracy``       strict / consistency: accuracy where the orders agree; its coverage is
                         ``consistency``
``parse_failure_rate``   share of judgments without a verdict (Con-J's "bug rate")
``position_bias``        among valid but inconsistent pairs, the share that picked slot 1 both times
                         vs slot 2 both times; ``slot1_rate`` is P(verdict = slot 1) over valid verdicts
``length``               the accuracies when the chosen answer is longer / shorter / equal (characters)
``probability``          P(chosen better): each order's P(verdict = chosen slot), 0.5 where none was
                         read (the accuracy convention), averaged over the orders; Brier score, ECE and
                         reliability bins on the symmetrised set {(p, 1), (1 - p, 0)}, since the event
                         "chosen wins" always happens and would make a one-sided diagram degenerate
``faithfulness``         share of probed judgments whose transferred rationale yields the same verdict
``ci95``                 95% intervals, pairs as the unit: Wilson score intervals for the 0/1 rates
                         (``accuracy_strict``, ``consistency``), a normal interval on the per-pair
                         scores for ``accuracy`` and ``accuracy_avg`` (a pair's two orders are not
                         independent, so they are averaged first, never counted as two samples)
=======================  =====================================================================

Each benchmark's official metric, computed from the same :class:`PairResult` tables, is in
:mod:`conj_train.evaluate.official_metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from conj_train.verdicts import score as verdict_score

CHOSEN, REJECTED = "chosen", "rejected"


@dataclass(frozen=True)
class OrderResult:
    """One judged order: ``label`` = slot of the chosen answer, ``verdict`` = slot picked or None.

    ``tie`` is True when the model said neither answer is better (a reward model's equal rewards);
    its verdict is then None.
    """

    label: int
    verdict: int | None
    p_slot1: float | None = None  # the judge's P(slot 1 better), when read
    transfer_verdict: int | None = None  # the verdict read back from this judgment's rationale
    tie: bool = False

    @property
    def pick(self) -> str | None:
        """``"chosen"``, ``"rejected"`` or None (no verdict)."""
        if self.verdict is None:
            return None
        return CHOSEN if self.verdict == self.label else REJECTED

    @property
    def score(self) -> float:
        """1 right, 0 wrong, 0.5 no verdict (the verdicts' score rule)."""
        return verdict_score(self.verdict, self.label)

    @property
    def p_chosen(self) -> float:
        """P(the chosen answer is better) in this order; 0.5 when no probability was read."""
        if self.p_slot1 is None:
            return 0.5
        return self.p_slot1 if self.label == 1 else 1.0 - self.p_slot1


@dataclass(frozen=True)
class PairResult:
    """A pair's judged orders plus what the breakdowns need.

    ``gold_tie``: the benchmark labels the pair a tie (chosen/rejected are then the file's first and
    second answers); only the official metrics that count ties use such pairs. ``scalar``: judged by
    a reward model. ``subset`` the pair's subset or source, ``cell`` the pair's answers within its
    benchmark row (RM-Bench: chosen style, rejected style; RewardBench 2: correct answer i, wrong
    answer j). ``row`` names that row (RewardBench 2: its ``id``) and ``row_pairs`` how many pairs it
    holds; ``rewards`` a reward model's (chosen, rejected) rewards.
    """

    pair_id: str
    first: OrderResult
    second: OrderResult | None = None
    chosen_chars: int = 0
    rejected_chars: int = 0
    gold_tie: bool = False
    scalar: bool = False
    subset: str = ""
    cell: tuple[int, int] | None = None
    row: str | None = None
    row_pairs: int = 0
    rewards: tuple[float, float] | None = None

    @property
    def orders(self) -> list[OrderResult]:
        """The judged orders, first order first."""
        return [self.first] if self.second is None else [self.first, self.second]

    @property
    def p_chosen(self) -> float:
        """P(chosen better) averaged over the judged orders."""
        return sum(o.p_chosen for o in self.orders) / len(self.orders)

    @property
    def length_bucket(self) -> str:
        """``chosen_longer``, ``chosen_shorter`` or ``equal_length``."""
        if self.chosen_chars > self.rejected_chars:
            return "chosen_longer"
        if self.chosen_chars < self.rejected_chars:
            return "chosen_shorter"
        return "equal_length"


def mean_or_none(values: Iterable[float]) -> float | None:
    """The mean of ``values``, or None when there are none."""
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def accuracy(pairs: Sequence[PairResult]) -> float | None:
    """Single random-order accuracy (first order only)."""
    return mean_or_none(p.first.score for p in pairs)


def accuracy_avg(pairs: Sequence[PairResult]) -> float | None:
    """Accuracy averaged over both orders (None without a second order)."""
    both = [p for p in pairs if p.second is not None]
    return mean_or_none((p.first.score + p.second.score) / 2 for p in both)  # type: ignore[union-attr]


@dataclass
class _OrderCounts:
    pairs: int = 0
    strict: int = 0
    consistent: int = 0
    inconsistent: int = 0
    first_both: int = 0
    second_both: int = 0
    error: int = 0


def _order_counts(pairs: Sequence[PairResult]) -> _OrderCounts:
    c = _OrderCounts()
    for p in pairs:
        if p.second is None:
            continue
        c.pairs += 1
        a, b = p.first, p.second
        if a.pick is None or b.pick is None:
            c.error += 1
        elif a.pick == b.pick:
            c.consistent += 1
            c.strict += a.pick == CHOSEN
        else:
            # Different answers after the swap means the same slot twice.
            c.inconsistent += 1
            c.first_both += a.verdict == 1
            c.second_both += a.verdict == 2
    return c


def both_order_metrics(pairs: Sequence[PairResult]) -> dict[str, Any]:
    """Strict accuracy, consistency, accuracy where the orders agree, position-bias direction."""
    c = _order_counts(pairs)
    if not c.pairs:
        return {
            "accuracy_strict": None,
            "consistency": None,
            "agree_accuracy": None,
            "agree_coverage": None,
            "position_bias": None,
        }
    return {
        "accuracy_strict": c.strict / c.pairs,
        "consistency": c.consistent / c.pairs,
        "agree_accuracy": _ratio(c.strict, c.consistent),
        "agree_coverage": c.consistent / c.pairs,
        "position_bias": {
            "consistent": c.consistent,
            "inconsistent": c.inconsistent,
            "error": c.error,
            "first": _ratio(c.first_both, c.inconsistent),
            "second": _ratio(c.second_both, c.inconsistent),
        },
    }


def parse_failures(pairs: Sequence[PairResult]) -> dict[str, Any]:
    """Judgments without a verdict, and P(verdict = slot 1) among those with one."""
    orders = [o for p in pairs for o in p.orders]
    valid = [o for o in orders if o.verdict is not None]
    failures = len(orders) - len(valid)
    return {
        "judgments": len(orders),
        "parse_failures": failures,
        "parse_failure_rate": _ratio(failures, len(orders)),
        "slot1_rate": _ratio(sum(o.verdict == 1 for o in valid), len(valid)),
    }


def length_breakdown(pairs: Sequence[PairResult]) -> dict[str, dict[str, Any]]:
    """Accuracies split by whether the chosen answer is the longer one (character length)."""
    out: dict[str, dict[str, Any]] = {}
    for bucket in ("chosen_longer", "chosen_shorter", "equal_length"):
        sub = [p for p in pairs if p.length_bucket == bucket]
        out[bucket] = {"pairs": len(sub), "accuracy": accuracy(sub), "accuracy_avg": accuracy_avg(sub)}
    return out


def brier(p_chosen: Sequence[float]) -> float | None:
    """Brier score of P(chosen better) against the gold outcome (chosen always wins)."""
    return mean_or_none((1.0 - p) ** 2 for p in p_chosen)


def _symmetrised(p_chosen: Sequence[float]) -> list[tuple[float, int]]:
    return [pt for p in p_chosen for pt in ((p, 1), (1.0 - p, 0))]


def reliability_bins(p_chosen: Sequence[float], bins: int = 10) -> list[dict[str, Any]]:
    """Equal-width bins of the symmetrised forecasts: count, mean forecast, observed frequency."""
    rows = [{"low": i / bins, "high": (i + 1) / bins, "count": 0, "_p": 0.0, "_y": 0} for i in range(bins)]
    for p, y in _symmetrised(p_chosen):
        row = rows[min(int(p * bins), bins - 1)]
        row["count"] += 1
        row["_p"] += p
        row["_y"] += y
    out = []
    for r in rows:
        n = r["count"]
        out.append(
            {
                "low": r["low"],
                "high": r["high"],
                "count": n,
                "mean_p": r["_p"] / n if n else None,
                "observed": r["_y"] / n if n else None,
            }
        )
    return out


def expected_calibration_error(p_chosen: Sequence[float], bins: int = 10) -> float | None:
    """ECE over the reliability bins (count-weighted |observed - mean forecast|)."""
    table = reliability_bins(p_chosen, bins)
    total = sum(r["count"] for r in table)
    if not total:
        return None
    return sum(r["count"] * abs(r["observed"] - r["mean_p"]) for r in table if r["count"]) / total


def probability_metrics(pairs: Sequence[PairResult], bins: int = 10) -> dict[str, Any]:
    """Brier score, ECE, mean P(chosen), reliability bins and how many judgments had a probability."""
    orders = [o for p in pairs for o in p.orders]
    read = sum(o.p_slot1 is not None for o in orders)
    ps = [p.p_chosen for p in pairs]
    return {
        "coverage": _ratio(read, len(orders)),
        "brier": brier(ps),
        "ece": expected_calibration_error(ps, bins),
        "mean_p_chosen": mean_or_none(ps),
        "reliability": reliability_bins(ps, bins),
    }


def faithfulness(pairs: Sequence[PairResult]) -> dict[str, Any]:
    """How often a judgment's own rationale, fed back, yields the verdict it came with."""
    probed = [o for p in pairs for o in p.orders if o.verdict is not None and o.transfer_verdict is not None]
    same = sum(o.transfer_verdict == o.verdict for o in probed)
    return {"probed": len(probed), "agree": same, "rate": _ratio(same, len(probed))}


Z95 = 1.959964  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson score interval of a rate ``successes / n`` (None when ``n`` is 0)."""
    if n <= 0:
        return None
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * (p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5 / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def mean_interval(values: Sequence[float], z: float = Z95) -> list[float] | None:
    """Normal-approximation interval of the mean of ``values`` (sample standard deviation), clipped
    to [0, 1]; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    half = z * sd / n**0.5
    return [max(0.0, mean - half), min(1.0, mean + half)]


def intervals(pairs: Sequence[PairResult]) -> dict[str, list[float] | None]:
    """95% intervals of the headline accuracies and consistency (see ``ci95`` above)."""
    both = [p for p in pairs if p.second is not None]
    c = _order_counts(pairs)
    return {
        "accuracy": mean_interval([p.first.score for p in pairs]),
        "accuracy_avg": mean_interval([(p.first.score + p.second.score) / 2 for p in both]),  # type: ignore[union-attr]
        "accuracy_strict": wilson_interval(c.strict, c.pairs),
        "consistency": wilson_interval(c.consistent, c.pairs),
    }


def pair_metrics(pairs: Sequence[PairResult], bins: int = 10) -> dict[str, Any]:
    """Every metric of the module docstring for one group of pairs."""
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "accuracy": accuracy(pairs),
        "accuracy_avg": accuracy_avg(pairs),
    }
    out.update(both_order_metrics(pairs))
    out.update(parse_failures(pairs))
    out["length"] = length_breakdown(pairs)
    out["probability"] = probability_metrics(pairs, bins)
    out["faithfulness"] = faithfulness(pairs)
    out["ci95"] = intervals(pairs)
    return out
