"""Reading a finished sampling run (stage 1's folder) as the filter's input.

Apart from :mod:`conj_train.filter.run` (which builds and writes the dataset) because these functions
define what a sampling folder must hold: the merged manifest, one prompt record per pair (with the
DPO prompt ``messages`` sampling wrote) and the judgment records, each row checked as it is read
and every judgment classified on the fly (:func:`conj_train.filter.rules.classify_judgments`), so texts are
only held in classified form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.filter.rules import (
    JUDGMENT_KINDS,
    LengthRule,
    SampledJudgment,
    classify_judgments,
)
from conj_train.io import iter_jsonl, read_json
from conj_train.runs import shard_files
from conj_train.verdicts import ZH_RATIONALE_KEY

_JUDGMENT_FIELDS = ("judgment_id", "pair_id", "kind", "index", "text")
CLASSIFY_BATCH = 2048  # judgments classified together (one tokenizer call for their long hint outputs)


def read_sample_manifest(sample_dir: Path) -> dict:
    """The merged manifest of a finished sampling run; a missing or incomplete run is a ConjError."""
    path = sample_dir / "manifest.json"
    if not path.is_file():
        raise ConjError(f"{sample_dir}: not a finished sampling run (no manifest.json); finish "
                        "`conj sample` first (all shards, then the merge)")
    manifest = read_json(path)
    if not manifest.get("complete"):
        raise ConjError(f"{path}: sampling run is not complete")
    if not shard_files(sample_dir, "prompts"):
        raise ConjError(f"{sample_dir}/prompts: no shard-*.jsonl files")
    return manifest


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        for i, row in enumerate(iter_jsonl(path, drop_partial_last_line=True), 1):
            if not isinstance(row, dict):
                raise ConjError(f"{path}: row {i} is not a JSON object")
            yield i, row
    except ValueError as e:
        raise ConjError(str(e)) from e


def read_prompts(sample_dir: Path) -> dict[str, dict]:
    """pair id -> prompt row (``label``, ``prompt``, ``messages``, ...) of every pair the sampler was
    given.

    ``messages`` (the DPO prompt turns, written by sampling) is required: a run sampled before prompt
    records carried it is a ConjError asking to sample again, rather than a rebuild of the turns from
    the sampling config, so the DPO prompt has one source (what the judge was sampled from)."""
    prompts: dict[str, dict] = {}
    for path in shard_files(sample_dir, "prompts"):
        for i, row in _rows(path):
            for key in ("pair_id", "label", "prompt"):
                if key not in row:
                    raise ConjError(f"{path}: row {i} has no field {key!r}")
            if "messages" not in row:
                raise ConjError(f"{path}: row {i} has no DPO prompt 'messages' (written by an older "
                                "conj-train sample); re-run `conj sample` into a new output_dir (or with "
                                "--overwrite true) before filtering")
            _check_messages(path, i, row["messages"])
            if row["label"] not in (1, 2):
                raise ConjError(f"{path}: row {i}: label must be 1 or 2, got {row['label']!r}")
            if row["pair_id"] in prompts:
                raise ConjError(f"{path}: row {i}: duplicate pair id {row['pair_id']!r}")
            prompts[row["pair_id"]] = row
    return prompts


def _check_messages(path: Path, i: int, messages: Any) -> None:
    ok = isinstance(messages, list) and bool(messages) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages)
    if not ok or messages[-1]["role"] != "user":
        raise ConjError(f"{path}: row {i}: 'messages' must be a list of {{role, content}} turns ending "
                        "with the user's judge prompt")


def read_judgments(sample_dir: Path, prompts: dict[str, dict], *, tokenizer: Any,
                   length_rule: LengthRule, counts: Counter, expected: int | None = None,
                   rationale_key: str = ZH_RATIONALE_KEY) -> dict[str, list[SampledJudgment]]:
    """Classify every judgment as it is read (texts are kept only in classified form); the length
    rule reads the rationale under ``rationale_key`` (the sampling template's).

    ``counts`` collects ``(kind, category)``, ``reason:<r>``, ``length_rule:<o>`` and
    ``finish_length`` tallies. ``expected``: the sampling manifest's judgment count; any other number
    on disk (a torn or emptied file) is a ConjError, not pairs "skipped by sampling".
    """
    grouped: dict[str, list[SampledJudgment]] = {}
    seen: set[str] = set()
    batch: list[tuple[dict, int]] = []

    def flush() -> None:
        judgments = classify_judgments(batch, tokenizer=tokenizer, length_rule=length_rule,
                                       rationale_key=rationale_key)
        for (row, _), j in zip(batch, judgments, strict=True):
            grouped.setdefault(row["pair_id"], []).append(j)
            counts[(j.kind, j.category)] += 1
            counts["finish_length"] += row.get("finish_reason") == "length"
            if j.reason:
                counts[f"reason:{j.reason}"] += 1
            if j.length_rule:
                counts[f"length_rule:{j.length_rule}"] += 1
        batch.clear()

    for path in shard_files(sample_dir, "judgments"):
        for i, row in _rows(path):
            missing = [k for k in _JUDGMENT_FIELDS if k not in row]
            if missing:
                raise ConjError(f"{path}: row {i} has no field {missing[0]!r}")
            pid, jid = row["pair_id"], row["judgment_id"]
            if pid not in prompts:
                raise ConjError(f"{path}: row {i}: judgment {jid!r} of unknown pair id {pid!r}")
            if row["kind"] not in JUDGMENT_KINDS:
                raise ConjError(f"{path}: row {i}: unknown kind {row['kind']!r}")
            if "label" in row and row["label"] != prompts[pid]["label"]:
                raise ConjError(f"{path}: row {i}: label {row['label']!r} differs from the prompt's "
                                f"{prompts[pid]['label']!r}")
            if not isinstance(row["text"], str):
                raise ConjError(f"{path}: row {i}: field 'text' must be a string")
            if not isinstance(row["index"], int) or isinstance(row["index"], bool):
                raise ConjError(f"{path}: row {i}: field 'index' must be an integer")
            if jid in seen:
                raise ConjError(f"{path}: row {i}: duplicate judgment id {jid!r}")
            seen.add(jid)
            batch.append((row, prompts[pid]["label"]))
            if len(batch) >= CLASSIFY_BATCH:
                flush()
    flush()
    if expected is not None and len(seen) != expected:
        raise ConjError(f"{sample_dir}: {len(seen)} judgments on disk but the sampling manifest lists "
                        f"{expected}; the judgments files changed or were cut after sampling (rerun "
                        "`conj sample` with --overwrite true)")
    return grouped


def load_judgments(output_dir: str | Path) -> Any:
    """The merged judgments of a finished run as a ``datasets.Dataset``."""
    from datasets import load_dataset

    out = Path(output_dir)
    if not (out / "manifest.json").exists():
        raise ConjError(f"{out}: no finished sampling run (manifest.json missing)")
    files = [str(p) for p in shard_files(out, "judgments")]
    return load_dataset("json", data_files=files, split="train")
