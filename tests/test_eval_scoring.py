"""Re-scoring evaluation records without a model: project metrics, RewardBench sections and rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from conj_train.evaluate.scoring import score_records
from conj_train.prompts.build import chosen_slot
from conj_train.verdicts import parse_verdict

ALWAYS_ONE = '{"原因": "x", "更好的回答": 1}'


def test_always_one_verdicts_score_half_on_average_zero_strict(tmp_path: Path) -> None:
    rows = []
    for i in range(30):
        pid, verdict = f"p{i}", parse_verdict(ALWAYS_ONE, "lenient").verdict
        for swapped in (False, True):
            label = chosen_slot(pid) if not swapped else 3 - chosen_slot(pid)
            rows.append(
                {
                    "dataset": "d",
                    "pair_id": pid,
                    "subset": "",
                    "swapped": swapped,
                    "label": label,
                    "verdict": verdict,
                    "probability": None,
                }
            )
    m = score_records(rows, "judge", both_orders=True)["d"]["overall"]
    assert (m["accuracy_avg"], m["accuracy_strict"], m["position_bias"]["first"]) == (0.5, 0.0, 1.0)


def test_rewardbench_subsets_get_section_scores(tmp_path: Path) -> None:
    rows = []
    for i, (subset, verdict) in enumerate([("llmbar-natural", 1), ("llmbar-natural", 2), ("math-prm", 1)]):
        rows.append(
            {
                "dataset": "rb",
                "pair_id": f"p{i}",
                "subset": subset,
                "swapped": False,
                "label": 1,
                "verdict": verdict,
                "probability": None,
            }
        )
    rb = score_records(rows, "judge", both_orders=False)["rb"]["rewardbench"]["accuracy"]
    assert rb["sections"]["Chat Hard"]["score"] == 0.5 and rb["sections"]["Reasoning"]["score"] == 1.0
    assert rb["overall"] == 0.75 and not rb["complete"]


def test_rewardbench_official_rule_for_reward_model_ties(tmp_path: Path) -> None:
    # Two reward-model records in llmbar-natural: one right, one with equal rewards (no verdict).
    rows = [{"dataset": "rb", "pair_id": f"p{i}", "subset": "llmbar-natural", "swapped": False, "label": 1,
             "verdict": v, "reward_1": r1, "reward_2": 0.0, "probability": None, "format": "rewardbench"}
            for i, (v, r1) in enumerate([(1, 1.0), (None, 0.0)])]
    rb = score_records(rows, "rm", both_orders=True)["rb"]["rewardbench"]
    assert rb["official"]["sections"]["Chat Hard"]["score"] == 0.5  # RewardBench: tie = 0 -> (1 + 0) / 2
    assert rb["accuracy"]["sections"]["Chat Hard"]["score"] == 0.75  # the project's tie = 0.5
    assert rb["counts"]["mismatches"]["llmbar-natural"] == [2, 100] and not rb["counts"]["match"]


def test_llmbar_folder_prints_natural_and_the_unweighted_adversarial_mean() -> None:
    from conj_train.evaluate.report import console_summary, official_headline

    # Per subset (file of an LLMBar folder): pairs, and how many the judge gets right in both orders.
    subsets = {"natural": (4, 3), "adversarial-neighbor": (6, 6), "adversarial-gptinst": (2, 0),
               "adversarial-gptout": (2, 1), "adversarial-manual": (2, 1)}
    rows = []
    for subset, (n, right) in subsets.items():
        for i in range(n):
            pid = f"{subset}-{i}"
            verdict_ok = i < right
            for swapped in (False, True):
                label = 2 if swapped else 1
                rows.append({"dataset": "llmbar", "pair_id": pid, "subset": subset, "swapped": swapped,
                             "label": label, "verdict": label if verdict_ok else 3 - label, "format": "llmbar"})
    off = score_records(rows, "judge", both_orders=True)["llmbar"]["official"]
    adversarial = (6 / 6 + 0 / 2 + 1 / 2 + 1 / 2) / 4  # LLMBar's table: the mean of the four subsets
    pooled = (6 + 0 + 1 + 1) / 12  # the accuracy over their rows, weighted by size
    assert off["llmbar_natural"] == 0.75 and off["llmbar_adversarial_avg"] == pytest.approx(adversarial)
    assert adversarial != pytest.approx(pooled)
    head = official_headline({"official": off})
    assert list(head)[:3] == ["benchmark", "llmbar_natural", "llmbar_adversarial_avg"]
    metrics = {"comparison": [{"model": "m", "dataset": "llmbar", "pairs": 16, "accuracy": 0.5, "accuracy_avg": 0.5,
                               "accuracy_strict": 0.5, "consistency": 1.0, "parse_failure_rate": 0.0,
                               "official": head}]}
    assert "llmbar_natural 75.0, llmbar_adversarial_avg 50.0" in console_summary(metrics)


def test_llmbar_adversarial_mean_needs_all_four_subsets() -> None:
    from conj_train.evaluate.official_metrics import llmbar_subset, llmbar_table

    assert [llmbar_subset(n) for n in ("Adversarial/GPTInst/dataset", "natural", "adversarial-gptout", "x")] == [
        "gptinst", "natural", "gptout", None]
    table = llmbar_table({"adversarial-neighbor": {"llmbar_accuracy": 0.5, "llmbar_agreement": 1.0}})
    assert table["llmbar_adversarial_avg"] is None and table["adversarial_subsets"] == ["neighbor"]
