"""The judge benchmarks ``conj eval`` scores by their own protocol: format, Hub split, official metric.

A data set's benchmark is found from its ingestion format (``llmbar``, ``autoj``, ...), so a local
copy of the official files and the Hub copy are scored alike. Each entry names the paper its metric
comes from; the metric functions live in :mod:`conj_train.evaluate.official_metrics` and follow each
benchmark's own scoring code (docs/benchmarks.md lists the files read and the row counts checked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conj_train.evaluate.metrics import PairResult
from conj_train.evaluate.official_metrics import (
    autoj_metrics,
    judgebench_metrics,
    llmbar_metrics,
    llmbar_table,
    rewardbench2_metrics,
    rmbench_metrics,
)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its format, paper, Hub copies and default split, and official metric.

    ``metric`` maps a data set's (or subset's) pairs to the official numbers; ``headline`` names the
    keys of its result that the reports print beside the project's metrics (those present); ``per_subset``
    says whether the benchmark's table also reports the metric per subset (file or source), and
    ``table`` how it combines them.
    """

    name: str
    format: str
    paper: str
    metric: Callable[[Sequence[PairResult]], dict[str, Any] | None] | None = None
    headline: tuple[str, ...] = ()
    hub_splits: tuple[tuple[str, str], ...] = ()
    per_subset: bool = False
    # The benchmark's table figures from its per-subset results (LLMBar's Natural and adversarial mean),
    # merged into the data set's official result.
    table: Callable[[Mapping[str, Mapping[str, Any]]], dict[str, Any]] | None = None


BENCHMARKS: dict[str, Benchmark] = {
    b.format: b
    for b in (
        Benchmark(
            "LLMBar", "llmbar",
            "Zeng et al., Evaluating Large Language Models at Evaluating Instruction Following, ICLR 2024",
            llmbar_metrics,
            ("llmbar_natural", "llmbar_adversarial_avg", "llmbar_accuracy", "llmbar_agreement"),
            per_subset=True, table=llmbar_table,
        ),
        Benchmark(
            "Auto-J pairwise", "autoj",
            "Li et al., Generative Judge for Evaluating Alignment, ICLR 2024",
            autoj_metrics, ("autoj_agreement", "autoj_consistency", "autoj_single_agreement"),
        ),
        Benchmark(
            "JudgeBench", "judgebench",
            "Tan et al., JudgeBench: A Benchmark for Evaluating LLM-based Judges, ICLR 2025",
            judgebench_metrics, ("judgebench_accuracy",), hub_splits=(("ScalerLab/JudgeBench", "gpt"),),
        ),
        Benchmark(
            "RM-Bench", "rmbench",
            "Liu et al., RM-Bench: Benchmarking Reward Models of Language Models with Subtlety and Style, "
            "ICLR 2025",
            rmbench_metrics, ("overall", "hard", "normal", "easy"),
        ),
        Benchmark(
            "RewardBench", "rewardbench",
            "Lambert et al., RewardBench: Evaluating Reward Models for Language Modeling, 2024",
            hub_splits=(("allenai/reward-bench", "filtered"),),
        ),
        Benchmark(
            "RewardBench 2", "rewardbench2",
            "Malik et al., RewardBench 2: Advancing Reward Model Evaluation, 2025",
            rewardbench2_metrics, ("overall",), hub_splits=(("allenai/reward-bench-2", "test"),),
        ),
    )
}


def benchmark_for(format_name: str | None) -> Benchmark | None:
    """The benchmark a data set's ingestion format belongs to (None for a mix or a plain format)."""
    parts = set((format_name or "").split("+"))
    return BENCHMARKS.get(parts.pop()) if len(parts) == 1 else None


def default_split(source: str) -> str | None:
    """The official split of a benchmark's Hub id (``allenai/reward-bench`` -> ``filtered``), else None."""
    for b in BENCHMARKS.values():
        for hub_id, split in b.hub_splits:
            if source.lower() == hub_id.lower():
                return split
    return None
