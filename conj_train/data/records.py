"""The canonical preference record: validation, skip reasons, stable ids, and JSONL round-trips.

A record is a plain dict (so ``datasets`` can hold it)::

    {"id", "context": [{"role", "content"}, ...], "question", "chosen", "rejected", "source", "meta"}

Format adapters (``formats.py``) turn a raw row into a :class:`Draft` or raise :class:`Skip`;
:func:`build_record` then runs the checks every format shares, in the order of ``SKIP_REASONS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.ids import record_id
from conj_train.io import iter_jsonl, write_jsonl

# Each skipped row is counted under exactly one reason: the first check (in this order) it fails.
SKIP_REASONS: dict[str, str] = {
    "missing_field": "a field the format needs is absent (or a message lacks role/content)",
    "invalid_label": "the preference label is not one the format allows",
    "tie": "the label says neither answer is better (or annotators have no majority)",
    "non_text_content": "a question, answer or message content is not a string (bool, None, list...)",
    "invalid_text": "a text holds a lone UTF-16 surrogate (not encodable as UTF-8)",
    "oversized_text": "a text over 1,000,000 characters (no judge context holds it; tokenizing it costs minutes)",
    "unknown_role": "a role outside user/assistant/system, or the turns are not ... user -> assistant",
    "empty_question": "the final user turn is empty after strip",
    "empty_answer": "an answer is empty after strip",
    "identical_answers": "chosen == rejected",
    "duplicate_pair": "same id (context, question, chosen, rejected) as an earlier used row",
    "contaminated": "the question matches an evaluation question (decontamination)",
}
# Far above any judge context (128k tokens is about 500k characters); a 200 MB answer would otherwise
# reach the tokenizer and exhaust memory.
MAX_TEXT_CHARS = 1_000_000
ROLES = ("user", "assistant", "system")
MULTI_TURN_MODES = ("context", "first_turn")
# "train" cleans data for training (every SKIP_REASONS check); "eval" keeps a benchmark's own row set:
# ties, identical or empty answers and repeated pairs stay (the official protocols score them), and
# each id includes the row so repeated pairs stay distinct.
INGEST_MODES = ("train", "eval")


class Skip(Exception):
    """Raised by an adapter or check: this row is not used, for ``reason`` (a SKIP_REASONS key)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Draft:
    """An adapter's output, still unchecked.

    ``prompt`` is a string (one user turn) or a message list ending with the final user turn;
    ``chosen``/``rejected`` are strings or assistant message dicts. ``tie`` marks a row whose label says
    neither answer is better: ``chosen``/``rejected`` are then just the first and second answers.
    """

    prompt: Any
    chosen: Any
    rejected: Any
    source: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    tie: bool = False


def _messages(prompt: Any) -> list[Any]:
    if isinstance(prompt, list):
        for m in prompt:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise Skip("missing_field", "a prompt message lacks role/content")
        return prompt
    return [{"role": "user", "content": prompt}]


def _answer(value: Any, which: str) -> Any:
    if isinstance(value, dict):
        if "content" not in value:
            raise Skip("missing_field", f"{which} message lacks content")
        return value
    return {"role": "assistant", "content": value}


def _encodable(text: str) -> bool:
    """False for text with a lone surrogate: JSON allows ``\\ud800``, but no file or tokenizer does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_types(msgs: list[dict], answers: list[dict]) -> None:
    for m in [*msgs, *answers]:
        if not isinstance(m["content"], str):
            raise Skip("non_text_content", f"{type(m['content']).__name__} where text is needed")
    for m in [*msgs, *answers]:
        if not _encodable(m["content"]):
            raise Skip("invalid_text", "a lone surrogate (e.g. JSON \\ud800) in the text")
    for m in [*msgs, *answers]:
        if len(m["content"]) > MAX_TEXT_CHARS:
            raise Skip("oversized_text", f"{len(m['content']):,} characters")
    if any(m["role"] not in ROLES for m in msgs):
        raise Skip("unknown_role", f"roles {sorted({str(m['role']) for m in msgs})}")
    if any(a.get("role", "assistant") != "assistant" for a in answers):
        raise Skip("unknown_role", "an answer is not an assistant turn")
    if not msgs or msgs[-1]["role"] != "user":
        raise Skip("unknown_role", "the turn before the answer is not a user turn")


def build_record(draft: Draft, *, multi_turn: str, dataset: str, row: int, default_source: str,
                 mode: str = "train", part: int | None = None) -> dict:
    """Check a draft and return the canonical record; raises :class:`Skip`.

    ``multi_turn="context"`` keeps earlier turns (system included) in ``context``;
    ``"first_turn"`` is Con-J's original reading: the first user turn is the question, no context.
    ``mode="eval"`` keeps empty and identical answers and makes the id ``<content hash>-<row>``
    (``-<row>.<part>`` for the ``part``-th pair of a row that holds several, e.g. RM-Bench's cells).
    """
    msgs = _messages(draft.prompt)
    chosen, rejected = _answer(draft.chosen, "chosen"), _answer(draft.rejected, "rejected")
    _check_types(msgs, [chosen, rejected])
    users = [m for m in msgs if m["role"] == "user"]
    if multi_turn == "first_turn":
        context, question = [], users[0]["content"]
    else:
        context = [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]]
        question = msgs[-1]["content"]
    if not question.strip():
        raise Skip("empty_question")
    if mode == "train":
        if not chosen["content"].strip() or not rejected["content"].strip():
            raise Skip("empty_answer", "chosen" if not chosen["content"].strip() else "rejected")
        if chosen["content"] == rejected["content"]:
            raise Skip("identical_answers")
    source = (draft.source if isinstance(draft.source, str) and draft.source and _encodable(draft.source)
              else default_source)
    rid = record_id(context, question, chosen["content"], rejected["content"])
    if mode == "eval":
        rid = f"{rid}-{row}" if part is None else f"{rid}-{row}.{part}"
    meta = {"dataset": dataset, "row": row, "turns": len(users), **draft.meta}
    if draft.tie:
        meta["tie"] = True
    return {
        "id": rid,
        "context": context,
        "question": question,
        "chosen": chosen["content"],
        "rejected": rejected["content"],
        "source": source,
        "meta": meta,
    }


def kept_in_eval(draft: Draft, rec: dict) -> str | None:
    """The train-mode skip reason (tie, empty or identical answers; repeats are found by the caller)
    that eval mode kept this row under, or None."""
    if draft.tie:
        return "tie"
    if not rec["chosen"].strip() or not rec["rejected"].strip():
        return "empty_answer"
    if rec["chosen"] == rec["rejected"]:
        return "identical_answers"
    return None


def write_records(path: str | Path, records: list[dict]) -> int:
    """Write canonical records as JSONL (atomically); returns the count."""
    return write_jsonl(path, records)


def read_records(path: str | Path) -> list[dict]:
    """Read canonical records written by :func:`write_records`."""
    try:
        return list(iter_jsonl(path))
    except (OSError, ValueError) as e:
        raise ConjError(f"cannot read records from {path}: {e}") from None
