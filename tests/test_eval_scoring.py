"""Re-scoring evaluation records without a model: project metrics, RewardBench sections and rules."""

from __future__ import annotations

from pathlib import Path

from conj_train.evaluate.scoring import score_records
from conj_train.prompts import chosen_slot
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
