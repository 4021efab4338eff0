"""Check: the official metrics recomputed from judgments the benchmarks' repositories store.

- LLMBar (princeton-nlp/LLMBar): every ``Dataset/**/evaluators/*/*/result.json`` is turned into pairs and
  scored with :func:`conj_train.evaluate.official_metrics.llmbar_metrics`; the result must equal the ``correct_average``,
  ``correct_both`` and ``equal`` of the ``statistics.json`` beside it. The project's own
  ``accuracy_avg`` / ``consistency`` are printed against them to show how far they are.
- Auto-J (GAIR-NLP/auto-j): the example predictions in ``data/outputs`` on ``data/test/testdata_pairwise.jsonl``
  scored with :func:`conj_train.evaluate.official_metrics.autoj_metrics` must give the README's Overall 54.96 / 83.41 and
  its eight group figures, and (the first order alone, ``--type single``) its 59.99 and eight group figures.

Each repository is read from a bare git directory (``git --git-dir DIR show HEAD:path``), as the
``fetch`` mirror provides it; nothing is copied into the project.

    PYTHONPATH=. .venv/bin/python bench/check_official.py --llmbar-git DIR --autoj-git DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
from typing import Any

from conj_train.evaluate.metrics import OrderResult, PairResult, pair_metrics
from conj_train.evaluate.official_metrics import autoj_metrics, llmbar_metrics, llmbar_table


def _git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, text=True, check=True).stdout


def _show(git_dir: str, path: str) -> Any:
    return _git(git_dir, "show", f"HEAD:{path}")


def _percent(value: str) -> float:
    """``"161 / 200 = 80.5%"`` or ``"81.0%"`` -> 0.805 / 0.81."""
    return float(value.rsplit("=", 1)[-1].strip().rstrip("%")) / 100


def check_llmbar(git_dir: str) -> bool:
    """Recompute every stored statistics.json; True when all match exactly."""
    files = _git(git_dir, "ls-tree", "-r", "--name-only", "HEAD").split("\n")
    stats = [f for f in files if f.endswith("/statistics.json")]
    matched, worst_project = 0, [0.0, 0.0]
    by_evaluator: dict[str, dict[str, tuple[dict, list[PairResult]]]] = {}
    for st in stats:
        published = json.loads(_show(git_dir, st))
        instances = json.loads(_show(git_dir, st[: -len("statistics.json")] + "result.json"))
        pairs = []
        for k, inst in enumerate(instances):
            gold, last = int(inst["label"]), inst["results"][-1]
            w = [last[f"swap = {s}"]["winner"] for s in ("False", "True")]  # both in the original order
            v = [int(x) if x in ("1", "2") else None for x in w]
            pairs.append(PairResult(str(k), OrderResult(gold, v[0]),
                                    OrderResult(3 - gold, None if v[1] is None else 3 - v[1])))
        m, p = llmbar_metrics(pairs), pair_metrics(pairs)
        if st.startswith("Dataset/LLMBar/"):  # Dataset/LLMBar/<subset path>/evaluators/<model>/<prompt>/
            subset, _, evaluator = st[len("Dataset/LLMBar/"): -len("/statistics.json")].partition("/evaluators/")
            by_evaluator.setdefault(evaluator, {})[subset] = (m, pairs)
        want = {"llmbar_accuracy": _percent(published["correct_average"]),
                "llmbar_correct_both": _percent(published["correct_both"]),
                "llmbar_agreement": _percent(published["equal"])}
        matched += all(abs(m[k] - v) < 1e-9 for k, v in want.items())
        worst_project[0] = max(worst_project[0], abs(p["accuracy_avg"] - want["llmbar_accuracy"]))
        worst_project[1] = max(worst_project[1], abs(p["consistency"] - want["llmbar_agreement"]))
    print(f"LLMBar: {matched} of {len(stats)} statistics.json reproduced exactly; the project's accuracy_avg / "
          f"consistency differ from Acc. / Agr. by up to {100 * worst_project[0]:.1f} / "
          f"{100 * worst_project[1]:.1f} points")
    return matched == len(stats) and check_llmbar_table(by_evaluator)


def check_llmbar_table(by_evaluator: dict[str, dict[str, tuple[dict, list[PairResult]]]]) -> bool:
    """LLMBar's table figure per evaluator: the adversarial average (:func:`llmbar_table`, the
    unweighted mean of the four subsets' Acc.) against the accuracy pooled over their rows."""
    gaps = []
    for evaluator, subsets in sorted(by_evaluator.items()):
        table = llmbar_table({name: m for name, (m, _) in subsets.items()})
        if table.get("llmbar_adversarial_avg") is None:
            continue
        adversarial = [p for name, (_, ps) in subsets.items() if name.startswith("Adversarial") for p in ps]
        pooled = llmbar_metrics(adversarial)["llmbar_accuracy"]
        gaps.append((abs(pooled - table["llmbar_adversarial_avg"]), evaluator, pooled, table))
    worst = max(gaps)
    gpt4 = [g for g in gaps if g[1].startswith("GPT-4")]
    print(f"LLMBar table: {len(gaps)} evaluators with all four adversarial subsets; adversarial average vs "
          f"pooled accuracy up to {100 * worst[0]:.2f} points ({worst[1]}: {100 * worst[3]['llmbar_adversarial_avg']:.2f} "
          f"vs {100 * worst[2]:.2f})" + "".join(
              f"; {e}: natural {100 * t['llmbar_natural']:.2f}, adversarial {100 * t['llmbar_adversarial_avg']:.2f} "
              f"(pooled {100 * p:.2f})" for _, e, p, t in gpt4[:3]))
    return bool(gaps)


# The per-group (agreement, consistency) printed in codes/leaderboard/README.md for the example outputs.
README_GROUPS = {
    "Summarization": (45.83, 73.61), "Exam Questions": (38.89, 69.44), "Code": (47.5, 75.83),
    "Rewriting": (49.17, 74.17), "Creative Writing": (59.72, 87.04), "Functional Writing": (61.67, 81.67),
    "General Communication": (55.21, 92.36), "NLP Tasks": (57.58, 86.36),
}


# The README's "type = single" table (codes/leaderboard/README.md).
README_SINGLE_GROUPS = {"Summarization": 56.94, "Exam Questions": 41.67, "Code": 54.17, "Rewriting": 57.5,
                        "Creative Writing": 63.43, "Functional Writing": 68.33, "General Communication": 57.29,
                        "NLP Tasks": 62.12}


def check_autoj(git_dir: str) -> bool:
    """The README's example agreement and consistency from the stored example predictions."""
    source = [json.loads(x) for x in _show(git_dir, "data/test/testdata_pairwise.jsonl").splitlines()]
    pred = [json.loads(x)["output"] for x in _show(git_dir, "data/outputs/pairwise_example_output.jsonl").splitlines()]
    exch = [json.loads(x)["output"] for x in
            _show(git_dir, "data/outputs/pairwise_exchange_example_output.jsonl").splitlines()]

    def order(label: int, slot: int) -> OrderResult:  # Auto-J label 0 / 1 = slot 1 / 2 of that order, 2 = tie
        return OrderResult(slot, None, tie=True) if label == 2 else OrderResult(slot, label + 1)

    pairs = []
    for k, (s, p, x) in enumerate(zip(source, pred, exch, strict=True)):
        slot = 2 if s["label"] == 1 else 1
        pairs.append(PairResult(str(k), order(p, slot), order(x, 3 - slot), gold_tie=s["label"] == 2,
                                subset=s["scenario"]))
    m = autoj_metrics(pairs)
    agreement, consistency = round(100 * m["autoj_agreement"], 2), round(100 * m["autoj_consistency"], 2)
    groups = {g: (round(100 * v["agreement"], 2), round(100 * v["consistency"], 2)) for g, v in m["groups"].items()}
    print(f"Auto-J: {m['pairs']} rows ({m['ties']} ties): agreement {agreement}, consistency {consistency} "
          "(README example: 54.96, 83.41); groups: " + ", ".join(f"{g} {a}/{c}" for g, (a, c) in groups.items()))
    # --type single: the first order alone (here the file's order, as Auto-J runs it).
    single = round(100 * m["autoj_single_agreement"], 2)
    single_groups = {g: round(100 * v["single_agreement"], 2) for g, v in m["groups"].items()}
    print(f"Auto-J single: agreement {single} (README example: 59.99); groups: "
          + ", ".join(f"{g} {a}" for g, a in single_groups.items()))
    return ((agreement, consistency) == (54.96, 83.41) and groups == README_GROUPS
            and single == 59.99 and single_groups == README_SINGLE_GROUPS)


def main() -> None:
    """Run the checks whose repositories are given; exit 1 if one fails."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llmbar-git", help="bare git dir of princeton-nlp/LLMBar")
    ap.add_argument("--autoj-git", help="bare git dir of GAIR-NLP/auto-j")
    args = ap.parse_args()
    ok = True
    if args.llmbar_git:
        ok &= check_llmbar(args.llmbar_git)
    if args.autoj_git:
        ok &= check_autoj(args.autoj_git)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
