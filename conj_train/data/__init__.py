"""Preference-data ingestion: any supported source -> canonical records + a report of what was skipped.

Modules: ``sources`` reads rows, ``formats`` adapts each format, ``records`` checks rows and builds
the canonical record, ``report`` counts, ``decontam`` removes evaluation questions.
"""

from __future__ import annotations

from conj_train.data.decontam import Decontaminator
from conj_train.data.formats import FORMATS, Options, check_field_map, detect_format, get_format
from conj_train.data.records import (
    INGEST_MODES,
    MULTI_TURN_MODES,
    SKIP_REASONS,
    Skip,
    build_record,
    kept_in_eval,
    read_records,
    write_records,
)
from conj_train.data.report import IngestReport, IngestResult, length_stats
from conj_train.data.sources import read_source
from conj_train.errors import ConjError
from conj_train.ids import record_id

__all__ = [
    "FORMATS",
    "INGEST_MODES",
    "SKIP_REASONS",
    "IngestReport",
    "IngestResult",
    "length_stats",
    "load_preferences",
    "read_records",
    "record_id",
    "write_records",
]


def _options(format: str | None, field_map: dict[str, str] | None, multi_turn: str,
             pku_label: str, mode: str) -> tuple[str | None, Options]:
    if mode not in INGEST_MODES:
        raise ConjError(f"mode must be one of {', '.join(INGEST_MODES)}, got {mode!r}")
    if multi_turn not in MULTI_TURN_MODES:
        raise ConjError(f"multi_turn must be one of {', '.join(MULTI_TURN_MODES)}, got {multi_turn!r}")
    if pku_label not in ("better", "safer"):
        raise ConjError(f"pku_label must be 'better' or 'safer', got {pku_label!r}")
    if field_map:
        if format not in (None, "fields"):
            raise ConjError(f"a field mapping only applies to format 'fields', not {format!r}")
        return "fields", Options(pku_label, check_field_map(field_map))
    if format == "fields":
        raise ConjError("format 'fields' needs a field mapping (--field prompt_field=NAME ...)")
    if format is not None:
        get_format(format)
    return format, Options(pku_label)


def load_preferences(
    source: str,
    *,
    format: str | None = None,
    config: str | None = None,
    split: str | None = None,
    field_map: dict[str, str] | None = None,
    multi_turn: str = "context",
    pku_label: str = "better",
    strict: bool = False,
    decontaminate_against: list[str] | None = None,
    ngram: int | None = None,
    mode: str = "train",
) -> IngestResult:
    """Read ``source`` (file, folder, saved dataset or Hub id) into canonical preference records.

    Every row is either used or counted under exactly one skip reason (see ``SKIP_REASONS``);
    ``strict=True`` turns the first skip into a :class:`ConjError` naming the row. The format is
    auto-detected per file unless given. ``decontaminate_against`` drops rows whose question
    matches an evaluation source's question (exactly, or sharing a word ``ngram``).

    ``mode="train"`` (training data) applies every check. ``mode="eval"`` keeps the benchmark's own
    row set: tie rows (``meta.tie``), empty and identical answers and repeated pairs are kept and
    counted in ``report.kept``, and ids include the row (see :func:`build_record`).
    """
    format, opts = _options(format, field_map, multi_turn, pku_label, mode)
    if ngram is not None and not decontaminate_against:
        raise ConjError("ngram needs evaluation sources to decontaminate against")
    guard = Decontaminator.from_sources(decontaminate_against, ngram) if decontaminate_against else None
    tables = read_source(source, config=config, split=split)
    report = IngestReport(dataset=source, mode=mode)
    records: list[dict] = []
    seen: set[str] = set()
    detected: list[str] = []
    for table in tables:
        if not table.rows:
            continue
        fmt = get_format(format) if format else detect_format(table.rows, table.name)
        detected.append(fmt.name)
        extra = {"file": table.name} if len(tables) > 1 else {}
        for group, row in zip(table.groups, table.rows, strict=True):
            index = report.rows_read
            report.rows_read += 1
            try:
                if not isinstance(row, dict):
                    raise Skip("missing_field", f"row is a {type(row).__name__}, not an object")
                converted = fmt.convert(row, opts)
                multi = isinstance(converted, list)  # a row holding several pairs
                drafts = converted if multi else [converted]
                built = []
                for k, draft in enumerate(drafts):
                    if draft.tie and mode == "train":
                        raise Skip("tie")
                    draft.meta.update(extra)
                    rec = build_record(draft, multi_turn=multi_turn, dataset=source, row=index,
                                       default_source=group or table.name, mode=mode,
                                       part=k if multi else None)
                    built.append((draft, rec))
                content = [record_id(r["context"], r["question"], r["chosen"], r["rejected"])
                           for _, r in built]
                if mode == "train" and any(c in seen for c in content):
                    raise Skip("duplicate_pair", next(c for c in content if c in seen))
                hit = guard.match(built[0][1]["question"]) if guard and built else None
                if hit:
                    raise Skip("contaminated", f"{hit} match with an evaluation question")
            except Skip as s:
                if strict:
                    raise ConjError(f"{source}: row {index} skipped ({s})") from None
                report.skip(s.reason, index)
                continue
            if mode == "eval":
                kept = {kept_in_eval(d, r) or ("duplicate_pair" if c in seen else None)
                        for (d, r), c in zip(built, content, strict=True)}
                for reason in sorted(k for k in kept if k):
                    report.keep(reason)
            seen.update(content)
            records.extend(r for _, r in built)
            report.rows_used += 1
            report.pairs += len(built)
            report.multi_turn_rows += bool(built) and built[0][1]["meta"]["turns"] > 1
    report.format = "+".join(dict.fromkeys(detected))
    return IngestResult(records, report)
