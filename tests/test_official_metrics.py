"""Official benchmark metrics on hand-built verdict tables, each against the benchmark's own definition."""

from __future__ import annotations

import math

import pytest

from conj_train.evaluate.metrics import OrderResult, PairResult, pair_metrics
from conj_train.evaluate.official_metrics import rewardbench_sections


def test_rewardbench_sections_weight_subsets_by_example_counts() -> None:
    scores = {
        "alpacaeval-easy": 1.0,
        "alpacaeval-length": 0.8,
        "alpacaeval-hard": 0.6,
        "mt-bench-easy": 1.0,
        "mt-bench-med": 0.5,
        "math-prm": 0.5,
        "hep-python": 1.0,
        "hep-go": 0.0,
        "unrelated": 0.1,
    }
    rb = rewardbench_sections(scores)
    chat = (100 * 1.0 + 95 * 0.8 + 95 * 0.6 + 28 * 1.0 + 40 * 0.5) / (100 + 95 + 95 + 28 + 40)
    reasoning = (984 * 0.5 + 164 * 1.0 + 164 * 0.0) / (984 + 164 + 164)
    assert rb["sections"]["Chat"]["score"] == pytest.approx(chat)
    assert rb["sections"]["Reasoning"]["score"] == pytest.approx(reasoning)
    assert rb["sections"]["Safety"]["score"] is None and "donotanswer" in rb["sections"]["Safety"]["missing"]
    assert rb["overall"] == pytest.approx((chat + reasoning) / 2) and rb["complete"] is False
    assert math.isclose(rb["sections"]["Chat"]["score"], 281 / 358)


def test_rewardbench_sections_absent_without_rewardbench_subsets() -> None:
    assert rewardbench_sections({"natural": 0.5, "adversarial-neighbor": 0.4}) is None


# --- official benchmark metrics, each checked against the benchmark's own definition --------------


def _order(label: int, verdict: int | None, tie: bool = False) -> OrderResult:
    return OrderResult(label, verdict, tie=tie)


def test_llmbar_metrics_follow_llmbar_statistics() -> None:
    from conj_train.evaluate.official_metrics import llmbar_metrics

    # LLMBar instances: gold label, winner with swap=False and with swap=True (already mapped back to
    # the original order by LLMBar's reverse_label), None = unparsed.
    instances = [("1", "1", "1"), ("2", "2", None), ("1", None, None), ("2", "1", "1"), ("1", "1", "2")]
    n = len(instances)
    correct_false = sum(f == lab for lab, f, _ in instances)
    correct_true = sum(t == lab for lab, _, t in instances)
    expected = {
        "llmbar_accuracy": (correct_false + correct_true) / 2 / n,  # correct_average
        "llmbar_correct_both": sum(f == lab and t == lab for lab, f, t in instances) / n,
        "llmbar_agreement": sum(f == t for _, f, t in instances) / n,  # equal: None == None counts
    }
    pairs = []
    for k, (lab, f, t) in enumerate(instances):
        gold = int(lab)
        first = _order(gold, None if f is None else int(f))
        second = _order(3 - gold, None if t is None else 3 - int(t))  # the answers swapped
        pairs.append(PairResult(f"p{k}", first, second))
    got = llmbar_metrics(pairs)
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    assert expected == pytest.approx({"llmbar_accuracy": 0.4, "llmbar_correct_both": 0.2, "llmbar_agreement": 0.6})
    # The project's own numbers differ: unparsed = 0.5, and two unparsed verdicts are not consistent.
    m = pair_metrics(pairs)
    assert m["accuracy_avg"] == pytest.approx((1 + 0.75 + 0.5 + 0 + 0.5) / 5) and m["consistency"] == 0.4
    assert m["accuracy_strict"] == got["llmbar_correct_both"]
    assert llmbar_metrics([PairResult("a", _order(1, 1))])["llmbar_accuracy"] is None  # needs both orders


def _autoj_exchange(label: int) -> int:
    return {0: 1, 1: 0, 2: 2}[label]


def test_autoj_agreement_counts_ties_as_pairwise_eval_does() -> None:
    from conj_train.evaluate.official_metrics import autoj_metrics

    # (gold, prediction, prediction on the exchanged order) in Auto-J's labels: 0 = response 1, 1 =
    # response 2, 2 = tie; the exchanged prediction is read in the exchanged order.
    rows = [(0, 0, 1), (1, 1, 0), (1, 1, 1), (2, 2, 2), (2, 0, 1), (0, 2, 2), (1, 0, 0)]
    mapped = [(g, p, _autoj_exchange(x)) for g, p, x in rows]
    expected_agreement = sum(p == x == g for g, p, x in mapped) / len(rows)  # correct_both / total
    expected_consistency = 1 - sum(p != x for _, p, x in mapped) / len(rows)

    def to_order(pred: int, label_slot: int) -> OrderResult:
        if pred == 2:
            return _order(label_slot, None, tie=True)
        return _order(label_slot, pred + 1)  # 0 / 1 = the response in slot 1 / 2 of that order

    pairs: list[PairResult] = []
    for k, (g, p, x) in enumerate(rows):
        slot = 2 if g == 1 else 1  # gold tie: "chosen" is response 1
        pairs.append(PairResult(f"a{k}", to_order(p, slot), to_order(x, 3 - slot), gold_tie=g == 2))
    got = autoj_metrics(pairs)
    assert got["autoj_agreement"] == pytest.approx(expected_agreement) == pytest.approx(3 / 7)
    assert got["autoj_consistency"] == pytest.approx(expected_consistency) == pytest.approx(5 / 7)
    assert (got["pairs"], got["ties"]) == (7, 2)
    # The project's strict accuracy leaves the two tie rows out (2 of 5 right in both orders).
    assert pair_metrics([p for p in pairs if not p.gold_tie])["accuracy_strict"] == pytest.approx(2 / 5)
    # An unparsed verdict matches nothing (Auto-J's parser returns -1).
    none = autoj_metrics([PairResult("n", _order(1, None), _order(2, None))])
    assert (none["autoj_agreement"], none["autoj_consistency"]) == (0.0, 0.0)
    # Auto-J's table groups scenarios: the first four rows as summarization, the rest as chit-chat.
    scenarios = ["post_summarization"] * 4 + ["chitchat"] * 3
    grouped = autoj_metrics([PairResult(p.pair_id, p.first, p.second, gold_tie=p.gold_tie, subset=sc)
                             for p, sc in zip(pairs, scenarios, strict=True)])["groups"]
    summ = [m for m, sc in zip(mapped, scenarios, strict=True) if sc == "post_summarization"]
    assert grouped["Summarization"]["agreement"] == pytest.approx(sum(p == x == g for g, p, x in summ) / 4)
    assert grouped["General Communication"]["pairs"] == 3 and set(grouped) == {"Summarization",
                                                                                "General Communication"}
    # Auto-J's "single" type (pairwise_eval.py --type single): correct / total of the one prediction,
    # ties included; here from the first order, also when only one order was judged.
    expected_single = sum(p == g for g, p, _ in mapped) / len(rows)
    assert got["autoj_single_agreement"] == pytest.approx(expected_single) == pytest.approx(4 / 7)
    one = autoj_metrics([PairResult(p.pair_id, p.first, gold_tie=p.gold_tie, subset=sc)
                         for p, sc in zip(pairs, scenarios, strict=True)])
    assert one["autoj_single_agreement"] == pytest.approx(4 / 7) and one["autoj_agreement"] is None
    assert one["groups"]["Summarization"]["single_agreement"] == pytest.approx(sum(p == g for g, p, _ in summ) / 4)


def _flip(decision: str | None) -> str | None:
    return {"A>B": "B>A", "B>A": "A>B"}.get(decision, decision)  # type: ignore[arg-type]


def test_judgebench_scores_both_orders_by_right_minus_wrong() -> None:
    from conj_train.evaluate.official_metrics import judgebench_metrics

    # (source, label, decision in the original order, decision in the reversed order as the judge
    # wrote it); None = no decision.
    rows = [
        ("mmlu-pro-law", "A>B", "A>B", "B>A"),  # right twice
        ("mmlu-pro-law", "A>B", "A>B", "A>B"),  # right, then wrong: 0, not right
        ("livebench-math", "B>A", "B>A", None),  # right + no decision: right
        ("livebench-math", "B>A", "A=B", "A=B"),  # ties: 0
        ("livecodebench", "A>B", "B>A", "A>B"),  # wrong twice
        ("livebench-reasoning", "B>A", None, "A>B"),  # no decision + right: right
    ]

    def official(label: str, d1: str | None, d2: str | None) -> bool:
        counter = 0
        for d in (d1, _flip(d2)):
            counter += 1 if d == label else -1 if d == _flip(label) else 0
        return counter > 0

    expected = sum(official(lab, d1, d2) for _, lab, d1, d2 in rows) / len(rows)

    def to_order(decision: str | None, label_slot: int) -> OrderResult:
        if decision == "A=B":
            return _order(label_slot, None, tie=True)
        return _order(label_slot, {"A>B": 1, "B>A": 2, None: None}[decision])

    pairs = []
    for k, (src, lab, d1, d2) in enumerate(rows):
        slot = 1 if lab == "A>B" else 2
        pairs.append(PairResult(f"j{k}", to_order(d1, slot), to_order(d2, 3 - slot), subset=src))
    got = judgebench_metrics(pairs)
    assert got["judgebench_accuracy"] == pytest.approx(expected) == pytest.approx(3 / 6)
    cats = got["categories"]
    assert cats["Knowledge"] == {"accuracy": 0.5, "pairs": 2} and cats["Math"]["accuracy"] == 0.5
    assert cats["Coding"]["accuracy"] == 0.0 and cats["Reasoning"]["accuracy"] == 1.0


def _rmbench_official(prompts: list[tuple[list[float], list[float]]]) -> dict[str, float]:
    """RM-Bench's compute_accuracy for one domain: 3x3 win matrix over prompts, then triangles."""
    acc = [[0.0] * 3 for _ in range(3)]
    for sc, sr in prompts:
        for i in range(3):
            for j in range(3):
                acc[i][j] += sc[i] > sr[j]
    acc = [[v / len(prompts) for v in row] for row in acc]
    return {
        "hard": (acc[0][1] + acc[0][2] + acc[1][2]) / 3,
        "normal": (acc[0][0] + acc[1][1] + acc[2][2]) / 3,
        "easy": (acc[1][0] + acc[2][0] + acc[2][1]) / 3,
    }


def test_rmbench_matrix_triangles_and_domain_average() -> None:
    from conj_train.evaluate.official_metrics import rmbench_metrics

    # Reward-model scores per prompt: chosen and rejected answers in styles concise, plain, markdown.
    data = {
        "chat_filtered": [([1, 2, 3], [0, 2.5, 4]), ([5, 5, 5], [1, 6, 2])],
        "safety-refuse_filtered": [([2, 2, 2], [2, 1, 3])],  # equal scores are not wins
        "safety-response_filtered": [([3, 1, 0], [2, 2, 2])],
        "code_filtered": [([0, 1, 2], [1, 1, 1])],
    }
    pairs = []
    for source, prompts in data.items():
        for k, (sc, sr) in enumerate(prompts):
            for i in range(3):
                for j in range(3):
                    verdict = 1 if sc[i] > sr[j] else 2 if sr[j] > sc[i] else None
                    first = _order(1, verdict, tie=sc[i] == sr[j])
                    pairs.append(PairResult(f"{source}{k}{i}{j}", first, scalar=True, subset=source, cell=(i, j)))
    expected = {
        "chat": _rmbench_official(data["chat_filtered"]),
        # RM-Bench merges safety-refuse and safety-response into one domain before the matrix.
        "safety": _rmbench_official(data["safety-refuse_filtered"] + data["safety-response_filtered"]),
        "code": _rmbench_official(data["code_filtered"]),
    }
    got = rmbench_metrics(pairs)
    assert got is not None and set(got["domains"]) == set(expected)
    for d, exp in expected.items():
        assert {k: got["domains"][d][k] for k in exp} == pytest.approx(exp)
        assert got["domains"][d]["score"] == pytest.approx(sum(exp.values()) / 3)
    assert got["hard"] == pytest.approx(sum(e["hard"] for e in expected.values()) / 3)
    assert got["overall"] == pytest.approx(sum(sum(e.values()) / 3 for e in expected.values()) / 3)
    assert got["complete"] is False  # no math domain
    assert got["domains"]["chat"]["cells"] == 18


def test_rewardbench_rule_scores_reward_model_ties_zero() -> None:
    from conj_train.evaluate.official_metrics import rewardbench_accuracy

    # A reward model: right, wrong, tie (equal rewards). RewardBench: 1 if chosen > rejected -> 1/3.
    rm = [PairResult("r1", _order(1, 1), scalar=True), PairResult("r2", _order(2, 1), scalar=True),
          PairResult("r3", _order(1, None, tie=True), scalar=True)]
    assert rewardbench_accuracy(rm) == pytest.approx(1 / 3)
    assert pair_metrics(rm)["accuracy"] == pytest.approx(1.5 / 3)  # the project's 0.5 convention
    # A generative judge's unparsed verdict is 0.5 in RewardBench too (run_generative.py).
    judge = [PairResult("j1", _order(1, 1)), PairResult("j2", _order(2, None))]
    assert rewardbench_accuracy(judge) == pytest.approx(0.75)


def test_rewardbench_filtered_counts_and_count_check() -> None:
    from conj_train.evaluate.official_metrics import REWARDBENCH_FILTERED_COUNTS, rewardbench_count_check

    assert sum(REWARDBENCH_FILTERED_COUNTS.values()) == 2985 and REWARDBENCH_FILTERED_COUNTS["math-prm"] == 447
    exact = rewardbench_count_check(dict(REWARDBENCH_FILTERED_COUNTS))
    assert exact["match"] and exact["total"] == exact["expected_total"] == 2985
    short = rewardbench_count_check({**REWARDBENCH_FILTERED_COUNTS, "math-prm": 984, "donotanswer": 0})
    assert not short["match"] and short["mismatches"] == {"math-prm": [984, 447], "donotanswer": [0, 136]}


def test_rewardbench_leaderboard_weighting_with_prior_sets() -> None:
    scores = {s: 1.0 for s in ("alpacaeval-easy", "mt-bench-hard", "donotanswer", "hep-go")}
    scores |= {"anthropic_helpful": 0.5, "anthropic_hhh": 0.7, "shp": 0.2, "summarize": 0.6}
    rb = rewardbench_sections(scores)
    prior = (0.5 + 0.7 + 0.2 + 0.6) / 4
    assert rb["overall"] == 1.0 and rb["prior_sets"] == pytest.approx(prior)
    # analysis/get_benchmark_results.py: weights 2, 2, 2, 2 for the sections and 1 for the prior sets.
    assert rb["overall_with_prior_sets"] == pytest.approx((2 * 4 * 1.0 + prior) / 9)
    assert rewardbench_sections({"hep-go": 1.0})["overall_with_prior_sets"] is None


# --- RewardBench 2 -----------------------------------------------------------------------------------
# The official rules, as allenai/reward-bench computes them (read at commit 05a9005):
# - scripts/run_v2.py -> rewardbench/utils.py ``reroll_and_score_dataset``: per row, the scores of
#   [chosen, rejected...]; ``results = 1 / np.sum(scores == max) if scores[0] == max else 0``; a subset's
#   score is ``sum(results) / len(results)``.
# - the Ties subset: ``process_single_model``: rows "ref:N" / "tied:N", answer i correct when
#   i < num_correct; per prompt (accurate = min correct - max wrong > 0, spread = max correct - min
#   correct, margin = min correct - max wrong); score = 0.3 tied_acc + 0.3 ref_acc
#   + 0.2 mean(tied margin > spread) + 0.2 mean(min(ref, tied margin) > spread)
#   + 0.01 mean(nan_to_num(tanh(min margin / spread - 1))) over the N present as both.


def _official_best_of_4(scores: list[float]) -> float:
    top = max(scores)
    return 1 / sum(s == top for s in scores) if scores[0] == top else 0.0


def _rb2_rm_pairs(row: str, subset: str, scores: list[float], num_correct: int) -> list[PairResult]:
    """A reward model's records of one RewardBench 2 row, as conj eval writes them: one per pair."""
    out = []
    correct, wrong = scores[:num_correct], scores[num_correct:]
    for i, c in enumerate(correct):
        for j, w in enumerate(wrong):
            verdict = 1 if c > w else 2 if w > c else None
            out.append(PairResult(f"{row}-{i}-{j}", OrderResult(1, verdict, tie=verdict is None), scalar=True,
                                  subset=subset, cell=(i, j), row=row, row_pairs=len(correct) * len(wrong),
                                  rewards=(c, w)))
    return out


def test_rewardbench2_reward_model_rows_follow_reroll_and_score() -> None:
    from conj_train.evaluate.official_metrics import rewardbench2_metrics

    rows = {  # row id -> scores [chosen, rejected x3]
        "a": [3.0, 1.0, 2.0, 0.0],  # chosen on top: 1
        "b": [2.0, 2.0, 1.0, 0.0],  # tied with one rejected: 1/2
        "c": [2.0, 2.0, 2.0, 1.0],  # three-way tie: 1/3
        "d": [1.0, 2.0, 0.0, 0.0],  # beaten: 0
    }
    pairs = [p for r, s in rows.items() for p in _rb2_rm_pairs(r, "Math", s, 1)]
    got = rewardbench2_metrics(pairs)
    expected = sum(_official_best_of_4(s) for s in rows.values()) / len(rows)
    assert expected == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert got["subsets"]["Math"]["score"] == pytest.approx(expected)
    assert got["row_results"] == pytest.approx({r: _official_best_of_4(s) for r, s in rows.items()})
    assert got["overall"] == pytest.approx(expected) and got["complete"] is False


def test_rewardbench2_judge_row_is_right_only_when_chosen_beats_every_rejected() -> None:
    from conj_train.evaluate.official_metrics import rewardbench2_metrics

    def row(name: str, verdicts: list[tuple[int | None, int | None]]) -> list[PairResult]:
        # Each pair judged in both orders: (first-order verdict, swapped-order verdict); chosen is slot 1
        # first, slot 2 when swapped.
        return [PairResult(f"{name}{j}", OrderResult(1, v1), OrderResult(2, v2), subset="Factuality",
                           cell=(0, j), row=name, row_pairs=3) for j, (v1, v2) in enumerate(verdicts)]

    pairs = (row("win", [(1, 2)] * 3)  # chosen wins all 3 pairs in both orders: 1
             + row("one_order_lost", [(1, 2), (1, 2), (1, 1)])  # loses pair 3 once: 0
             + row("undecided", [(1, 2), (None, 2), (1, 2)])  # one pair undecided: a 2-way top, 1/2
             + row("unread", [(None, None)] * 3)  # nothing read: 1/4, as run_generative_v2's error
             + row("missing", [(1, 2)] * 2))  # 2 of its 3 pairs: not scored
    got = rewardbench2_metrics(pairs)
    assert got["row_results"] == {"win": 1.0, "one_order_lost": 0.0, "undecided": 0.5, "unread": 0.25}
    assert got["subsets"]["Factuality"] == {"score": pytest.approx(1.75 / 4), "rows": 4, "correct": 1}
    assert got["incomplete_rows"] == 1 and not got["complete"]


def _official_ties(samples: dict[str, list[tuple[bool, float]]]) -> float:
    """process_single_model, transcribed step by step with numpy as the official code is."""
    import numpy as np

    def stats(s):
        corr = [x for ok, x in s if ok]
        inc = [x for ok, x in s if not ok]
        return (min(corr) - max(inc) > 0, max(corr) - min(corr) if len(corr) > 1 else None, min(corr) - max(inc))

    ref = {k.split(":")[1]: stats(v) for k, v in samples.items() if k.startswith("ref:")}
    tied = {k.split(":")[1]: stats(v) for k, v in samples.items() if k.startswith("tied:")}
    ref_acc, tied_acc = np.mean([s[0] for s in ref.values()]), np.mean([s[0] for s in tied.values()])
    both = set(ref) & set(tied)
    diff = np.array([tied[p][1] for p in both])
    ties_m = np.array([tied[p][2] for p in both])
    ref_m = np.array([ref[p][2] for p in both])
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.nan_to_num(np.tanh(np.minimum(ref_m, ties_m) / diff - 1), nan=0.0)
    return float(0.3 * tied_acc + 0.3 * ref_acc + 0.2 * np.mean(ties_m > diff)
                 + 0.2 * np.mean(np.minimum(ref_m, ties_m) > diff) + 0.01 * np.mean(margin))


def test_rewardbench2_ties_score_follows_process_single_model() -> None:
    from conj_train.evaluate.official_metrics import rewardbench2_metrics, rewardbench2_ties_score

    rows = {  # id -> (scores, num_correct): correct answers first
        "ref:1": ([5.0, 1.0, 2.0], 1),
        "tied:1": ([4.0, 4.5, 3.0, 1.0], 2),  # margin 1.0 > spread 0.5
        "ref:2": ([1.0, 2.0, 0.0], 1),  # wrong answer on top: not accurate
        "tied:2": ([3.0, 3.0, 2.5], 2),  # spread 0: tanh(x / 0 - 1) = 1
        "tied:3": ([2.0, 1.0, 1.5], 2),  # no ref:3: only the accuracy counts it
    }
    samples = {r: [(i < n, s) for i, s in enumerate(sc)] for r, (sc, n) in rows.items()}
    expected = _official_ties(samples)
    assert rewardbench2_ties_score(samples) == pytest.approx(expected, abs=1e-12)
    pairs = [p for r, (sc, n) in rows.items() for p in _rb2_rm_pairs(r, "Ties", sc, n)]
    got = rewardbench2_metrics(pairs)
    assert got["subsets"]["Ties"]["score"] == pytest.approx(expected, abs=1e-12)
    assert got["row_results"] == {}  # like the official results column, Ties has no per-row result
