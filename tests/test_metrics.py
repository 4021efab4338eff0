"""Metric math on hand-built verdict tables (no model)."""

from __future__ import annotations

import pytest

from conj_train.evaluate.metrics import (
    OrderResult,
    PairResult,
    brier,
    expected_calibration_error,
    pair_metrics,
    reliability_bins,
)
from conj_train.prompts.build import chosen_slot


def _pair(
    pid: str, first: tuple, second: tuple | None = None, chars: tuple[int, int] = (10, 10)
) -> PairResult:
    return PairResult(pid, OrderResult(*first), None if second is None else OrderResult(*second), *chars)


def _always_one(n: int) -> list[PairResult]:
    pairs = []
    for i in range(n):
        slot = chosen_slot(f"p{i}")
        pairs.append(_pair(f"p{i}", (slot, 1), (3 - slot, 1)))
    return pairs


def test_always_one_judge_is_half_right_never_strict_and_fully_slot1_biased() -> None:
    pairs = _always_one(40)
    m = pair_metrics(pairs)
    assert m["accuracy_avg"] == 0.5
    assert m["accuracy_strict"] == 0.0
    assert m["consistency"] == 0.0
    assert m["position_bias"]["first"] == 1.0 and m["position_bias"]["second"] == 0.0
    assert m["position_bias"]["inconsistent"] == 40
    assert m["slot1_rate"] == 1.0
    # The single random order rewards it exactly when the chosen answer sits in slot 1.
    assert m["accuracy"] == sum(chosen_slot(f"p{i}") == 1 for i in range(40)) / 40


def _table() -> list[PairResult]:
    return [
        _pair("right-both", (1, 1), (2, 2), (30, 10)),  # consistent, right
        _pair("slot1-twice", (2, 1), (1, 1), (10, 30)),  # inconsistent, slot 1 both times
        _pair("one-failure", (1, None), (2, 2), (30, 10)),  # error in the first order
        _pair("wrong-both", (2, 1), (1, 2), (10, 10)),  # consistent, wrong
    ]


def test_accuracies_consistency_and_agreement_on_a_hand_table() -> None:
    m = pair_metrics(_table())
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert m["accuracy_avg"] == pytest.approx((1 + 0.5 + 0.75 + 0) / 4)
    assert m["accuracy_strict"] == pytest.approx(1 / 4)
    assert m["consistency"] == pytest.approx(2 / 4)
    assert m["agree_accuracy"] == pytest.approx(1 / 2) and m["agree_coverage"] == pytest.approx(2 / 4)


def test_parse_failures_and_position_bias_direction() -> None:
    m = pair_metrics(_table())
    assert (m["judgments"], m["parse_failures"]) == (8, 1)
    assert m["parse_failure_rate"] == pytest.approx(1 / 8)
    assert m["slot1_rate"] == pytest.approx(4 / 7)
    assert m["position_bias"] == {"consistent": 2, "inconsistent": 1, "error": 1, "first": 1.0, "second": 0.0}


def test_length_buckets_split_accuracy_by_longer_chosen() -> None:
    lg = pair_metrics(_table())["length"]
    assert lg["chosen_longer"] == {
        "pairs": 2,
        "accuracy": 0.75,
        "accuracy_avg": pytest.approx((1 + 0.75) / 2),
    }
    assert lg["chosen_shorter"] == {"pairs": 1, "accuracy": 0.0, "accuracy_avg": 0.5}
    assert lg["equal_length"]["pairs"] == 1 and lg["equal_length"]["accuracy_avg"] == 0.0


def test_single_order_leaves_both_order_metrics_empty() -> None:
    m = pair_metrics([_pair("a", (1, 1)), _pair("b", (2, None))])
    assert m["accuracy"] == 0.75
    assert m["accuracy_avg"] is None and m["consistency"] is None and m["position_bias"] is None


def test_probability_maps_slots_to_chosen_and_fills_missing_with_half() -> None:
    # P(slot 1) 0.8 with chosen in slot 1 -> 0.8; 0.4 with chosen in slot 2 -> 0.6; pair mean 0.7.
    p = _pair("a", (1, 1, 0.8), (2, 2, 0.4))
    q = _pair("b", (2, None, None), (1, 1, 0.9))
    assert p.p_chosen == pytest.approx(0.7) and q.p_chosen == pytest.approx((0.5 + 0.9) / 2)
    prob = pair_metrics([p, q])["probability"]
    assert prob["coverage"] == pytest.approx(3 / 4)
    assert prob["brier"] == pytest.approx((0.3**2 + 0.3**2) / 2)


def test_reliability_bins_are_symmetrised_and_ece_matches_by_hand() -> None:
    bins = reliability_bins([0.7, 0.95], bins=10)
    filled = {(b["low"], b["count"], b["observed"]) for b in bins if b["count"]}
    assert {(round(lo, 1), c, o) for lo, c, o in filled} == {
        (0.7, 1, 1.0),
        (0.3, 1, 0.0),
        (0.9, 1, 1.0),
        (0.0, 1, 0.0),
    }
    ece = expected_calibration_error([0.7, 0.95], bins=10)
    assert ece == pytest.approx((0.3 + 0.3 + 0.05 + 0.05) / 4)
    assert brier([0.7, 0.95]) == pytest.approx((0.09 + 0.0025) / 2)


def test_faithfulness_counts_transferred_verdicts_that_match() -> None:
    pairs = [_pair("a", (1, 1, None, 1), (2, 2, None, 1)), _pair("b", (1, None, None, 2), (2, 1, None, None))]
    f = pair_metrics(pairs)["faithfulness"]
    assert f == {"probed": 2, "agree": 1, "rate": 0.5}


def test_wilson_interval_matches_the_textbook_values() -> None:
    from conj_train.evaluate.metrics import wilson_interval

    lo, hi = wilson_interval(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    lo, hi = wilson_interval(0, 20)  # a rate of 0 still has an upper bound
    assert lo == 0.0 and round(hi, 4) == 0.1611
    assert wilson_interval(0, 0) is None


def test_accuracy_interval_takes_pairs_as_the_unit() -> None:
    pairs = _always_one(40)  # every pair scores exactly 0.5 over its two orders: no spread
    ci = pair_metrics(pairs)["ci95"]
    assert ci["accuracy_avg"] == [0.5, 0.5]
    assert ci["consistency"][0] == 0.0 and 0 < ci["consistency"][1] < 0.1
    mixed = [_pair(f"p{i}", (1, 1 if i % 2 else 2), (2, 2 if i % 2 else 1)) for i in range(40)]
    lo, hi = pair_metrics(mixed)["ci95"]["accuracy_avg"]  # half the pairs right twice, half wrong twice
    assert round(lo, 3) == round(0.5 - 1.959964 * (40 / 39 * 0.25) ** 0.5 / 40**0.5, 3) and round(hi - 0.5, 6) == round(0.5 - lo, 6)
