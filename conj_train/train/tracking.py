"""Training metrics on disk (JSONL, CSV, PNG); the wandb set-up is in :mod:`conj_train.trackers`.

Every log the Trainer emits is appended to ``metrics.jsonl`` in the output directory (main process
only, fsynced, so a killed run keeps its curve); at the end of training the rows are also written as
``metrics.csv`` and plotted to ``training_curves.png``. A resumed run first drops the rows logged
after its checkpoint, so the files describe one continuous run.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from conj_train.io import JsonlAppender, iter_jsonl, write_jsonl

# The wandb set-up and secret redaction are shared with the other stages' trackers.
from conj_train.trackers import is_secret, redact, setup_wandb  # noqa: F401

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "training_curves.png"

# (panel title, train key, eval key) for the DPO judge and the scalar reward model.
DPO_PANELS = (
    ("loss", "loss", "eval_loss"),
    ("reward margin", "rewards/margins", "eval_rewards/margins"),
    ("reward accuracy", "rewards/accuracies", "eval_rewards/accuracies"),
)
RM_PANELS = (
    ("loss", "loss", "eval_loss"),
    ("reward margin", "margin", "eval_margin"),
    ("accuracy", "accuracy", "eval_accuracy"),
)

def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (empty when absent; a torn last line is skipped)."""
    p = Path(path)
    return list(iter_jsonl(p, drop_partial_last_line=True)) if p.is_file() else []


def write_metrics_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write rows as CSV with the union of their keys as columns (step first)."""
    keys: dict[str, None] = {"step": None, "epoch": None}
    for r in rows:
        keys.update(dict.fromkeys(r))
    tmp = Path(path).with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(keys))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot_curves(rows: Sequence[dict[str, Any]], path: str | Path,
                panels: Sequence[tuple[str, str, str]] = DPO_PANELS) -> bool:
    """Plot each panel's train and eval key against the step; returns False when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        return [p[0] for p in pts], [p[1] for p in pts]

    if not any(series(k)[0] for _, tk, ek in panels for k in (tk, ek)):
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, train_key, eval_key) in zip(axes, panels, strict=True):
        for key, label, style in ((train_key, "train", "-"), (eval_key, "eval", "o--")):
            xs, ys = series(key)
            if xs:
                ax.plot(xs, ys, style, label=label, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


class MetricsRecorder(TrainerCallback):
    """Trainer callback: append every log to ``metrics.jsonl``; write CSV + PNG when training ends."""

    def __init__(self, output_dir: str | Path, panels: Sequence[tuple[str, str, str]] = DPO_PANELS) -> None:
        self.dir = Path(output_dir)
        self.panels = tuple(panels)
        self._out: JsonlAppender | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        path = self.dir / METRICS_JSONL
        # A resumed run restarts at its checkpoint: rows logged after it belong to the lost tail.
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= state.global_step]
        write_jsonl(path, kept)
        self._out = JsonlAppender(path)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch}
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
        if self._out is None:  # a log outside train(), e.g. a later evaluate()
            self._out = JsonlAppender(self.dir / METRICS_JSONL)
        self._out.write_batch([row])

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.finish()

    def finish(self) -> None:
        """Close the JSONL and (re)write the CSV and the PNG from it."""
        if self._out is not None:
            self._out.close()
            self._out = None
        rows = read_metrics(self.dir / METRICS_JSONL)
        if rows:
            write_metrics_csv(rows, self.dir / METRICS_CSV)
            plot_curves(rows, self.dir / CURVES_PNG, self.panels)
