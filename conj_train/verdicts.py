"""Verdict parsers for judge outputs: ``strict`` builds training data, ``lenient`` scores evaluations.

Both follow Con-J's two parsers (conj-spec 5.1 and 5.2) and run in linear time: no backtracking
regular expressions over model output, a bounded number of ``json.loads`` calls, never ``eval``.

Common JSON stage (both modes), first object holding a verdict key wins:

1. the first ```` ```json ```` fenced block, then the last one;
2. the whole text, if it starts with ``{``;
3. the first, then the last top-level balanced ``{...}`` object (one scan that tracks brace depth and
   JSON string state; it restarts once after an object that never closes).

If a parsed object holds a verdict key, its value decides and nothing else is tried: the integer 1
or 2 counts, and so do 1.0 / 2.0 (the original's ``value in [1, 2]`` test accepts them). Strings
("1", "回答2"), booleans and other numbers are ``bad_value``; the original would take ``true`` as 1
through Python's ``True == 1``, which we treat as an accident.

Otherwise a fallback runs:

- ``strict``: the first quoted verdict key (``"更好的回答":``; ASCII or “ ” quotes, ASCII or
  full-width colon) and then the first digit 1/2 after it (ASCII or full-width). Verdict keys default
  to the Chinese key and the English prompt's ``better_answer`` (plus ``better answer``,
  ``betterAnswer``).
- ``lenient``: the spec's key cascade (:data:`LENIENT_CASCADE`, in order). For the first key present:
  ``"KEY":`` then the first 1/2 after it, else ``KEY`` then the first 1/2 after it, else a 1/2 that is
  the last of ``1 2 | ^`` before the key (what the original's look-ahead regex finds).

Deliberate differences from the original code, all in edge cases: the last fenced block is really
parsed (the original's second ``re.search`` almost always misses it); ``{...}`` candidates are
balanced objects rather than "up to the first ``}``", so nested objects parse; the last object is
tried whenever the first gives no verdict key; strict mode runs its quoted-key fallback also when a
parsed object lacks the key; ``demjson`` is not used (the training parser never imported it).

Lenient mode first replaces newlines with spaces, as the original does; strict mode replaces the
Chinese closing quote + comma (``”，`` / ``”,``) with ``",``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from conj_train.errors import ConjError

MODES = ("strict", "lenient")
DEFAULT_VERDICT_KEYS = ("更好的回答", "better_answer", "better answer", "betterAnswer")
DEFAULT_RATIONALE_KEYS = ("原因", "reason")
# conj-spec 5.2, in the original's order; spaces inside keys are part of the keys.
LENIENT_CASCADE = (
    "更好的回答", "更好回答", "更好得回答", "更好地回答", "better_answer", "better answer", "更好答案",
    "更好得答案", "更好的答案", "更好地答案", "更佳回答", "更佳答案", "更好答", "最佳答案", "更好答 案",
    "更好 的 回答 ", "betterAnswer", "更好 的 回应 ", "更好得回应回答", "答案", "回答",
)  # fmt: skip

POSITIVE, NEGATIVE, UNPARSEABLE = "positive", "negative", "unparseable"
# Unparseable reasons; "truncated" comes from the generation's finish reason, not from the text.
EMPTY, NO_JSON, INVALID_JSON, NO_VERDICT_KEY, BAD_VALUE, TRUNCATED = (
    "empty", "no_json", "invalid_json", "no_verdict_key", "bad_value", "truncated",
)  # fmt: skip

_DIGITS = {"1": 1, "2": 2, "１": 1, "２": 2}
_DIGIT_RE = re.compile("[12１２]")
_QUOTES = '"“”'
_FENCE = "```json"
# Structural characters inside an object; strings are skipped with str.find (see _string_end).
_STRUCTURE_RE = re.compile(r'[{}"]')
_OPEN_RUN_RE = re.compile(r"\{+")
_CLOSE_RUN_RE = re.compile(r"\}+")
_DECODE = json.JSONDecoder().decode
_SCAN_PASSES = 2


class Verdict(NamedTuple):
    """A parsed judgment: ``verdict`` is 1, 2 or None; ``reason`` says why it is None.

    ``via`` names what produced the verdict: "fenced", "json" (whole text), "object" (a ``{...}``
    inside the text), "key" (strict quoted-key fallback) or "cascade" (lenient key cascade).
    """

    verdict: int | None
    rationale: str | None = None
    reason: str | None = None
    via: str | None = None


def parse_verdict(
    text: str,
    mode: str = "strict",
    *,
    verdict_keys: Sequence[str] | None = None,
    rationale_keys: Sequence[str] | None = None,
) -> Verdict:
    """Parse one judge output in ``strict`` (training data) or ``lenient`` (evaluation) mode."""
    if mode not in MODES:
        raise ConjError(f"unknown verdict parser mode {mode!r} (expected one of {', '.join(MODES)})")
    vkeys = DEFAULT_VERDICT_KEYS if verdict_keys is None else tuple(verdict_keys)
    rkeys = DEFAULT_RATIONALE_KEYS if rationale_keys is None else tuple(rationale_keys)
    text = text.strip() if mode == "strict" else text.replace("\n", " ").strip()
    if not text:
        return Verdict(None, None, EMPTY)

    found, reason = _json_stage(text, vkeys)
    if found is None and mode == "strict" and "”" in text:
        text = text.replace("”，", '",').replace("”,", '",')
        found, reason = _json_stage(text, vkeys)
    if found is not None:
        obj, key, via = found
        verdict = _value_verdict(obj[key])
        return Verdict(verdict, _dict_rationale(obj, rkeys), None if verdict else BAD_VALUE, via)

    if mode == "strict":
        m = _quoted_key_re(vkeys).search(text)
        if m is None:
            return Verdict(None, None, reason)
        d = _DIGIT_RE.search(text, m.end())
        if d is None:
            return Verdict(None, None, BAD_VALUE)
        return Verdict(_DIGITS[d.group()], _loose_rationale(text, rkeys, m.start()), None, "key")

    keys = LENIENT_CASCADE if verdict_keys is None else _dedup(vkeys + LENIENT_CASCADE)
    hit = _cascade(text, keys)
    if hit is None:
        return Verdict(None, None, reason)
    verdict, key_at = hit
    return Verdict(verdict, _loose_rationale(text, rkeys, key_at), None, "cascade")


def classify(verdict: int | None, label: int, finish_reason: str | None = None) -> str:
    """Return "positive" (verdict == label), "negative" (the other slot) or "unparseable" (None).

    A verdict found in a truncated output still counts, as in the original; ``finish_reason`` is
    accepted so callers can pass a judgment record's fields as they are, and only changes the
    unparseable *reason* (see :func:`unparseable_reason`).
    """
    del finish_reason  # the category never depends on it (see docstring)
    if label not in (1, 2):
        raise ConjError(f"label must be 1 or 2, got {label!r}")
    if verdict is None:
        return UNPARSEABLE
    return POSITIVE if verdict == label else NEGATIVE


def unparseable_reason(parsed: Verdict, finish_reason: str | None = None) -> str | None:
    """Why ``parsed`` has no verdict: "truncated" when generation hit its length limit, else the
    parser's reason; None when there is a verdict."""
    if parsed.verdict is not None:
        return None
    return TRUNCATED if finish_reason == "length" else parsed.reason


def score(verdict: int | None, label: int) -> float:
    """Evaluation credit, as in Con-J and RewardBench: 1 if right, 0 if wrong, 0.5 if unparseable."""
    category = classify(verdict, label)
    return 1.0 if category == POSITIVE else 0.0 if category == NEGATIVE else 0.5


# --- JSON stage ------------------------------------------------------------------------------------


def _json_stage(text: str, keys: tuple[str, ...]) -> tuple[tuple[dict, str, str] | None, str]:
    """First JSON object holding a verdict key, as (object, key, via); else None and the reason."""
    reason = NO_JSON
    for via, start, end in _candidates(text):
        if reason == NO_JSON:
            reason = INVALID_JSON
        try:
            obj = _DECODE(text if (start, end) == (0, len(text)) else text[start:end])
        except (ValueError, RecursionError):  # RecursionError: very deep nesting
            continue
        if not isinstance(obj, dict):
            continue
        reason = NO_VERDICT_KEY
        for key in keys:
            if key in obj:
                return (obj, key, via), reason
    return None, reason


def _candidates(text: str) -> Iterator[tuple[str, int, int]]:
    """JSON candidate spans in the order tried, without repeats; the ``{...}`` scan runs lazily."""
    tried: set[tuple[int, int]] = set()
    spans: list[tuple[str, tuple[int, int] | None]] = []
    if _FENCE in text:
        spans += [("fenced", s) for s in _fence_spans(text)]
    if text.startswith("{"):
        spans.append(("json", (0, len(text))))
    for via, span in spans:
        if span is not None and span not in tried:
            tried.add(span)
            yield via, span[0], span[1]
    if "{" in text and "}" in text:
        for span in _object_spans(text):
            if span is not None and span not in tried:
                tried.add(span)
                yield "object", span[0], span[1]


def _fence_spans(text: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Inner spans of the first and the last ```` ```json ... ``` ```` block (None if unclosed)."""
    out: list[tuple[int, int] | None] = []
    for opener in (text.find(_FENCE), text.rfind(_FENCE)):
        start = opener + len(_FENCE)
        end = text.find("```", start)
        out.append((start, end) if end >= 0 else None)
    return out[0], out[1]


def _object_spans(text: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """First and last top-level balanced ``{...}`` spans, found in linear time.

    Strings count only inside an object, so prose quotes cannot hide a later object. An object that
    never closes (a stray ``{`` or an unpaired quote) swallows the rest of the text; the scan then
    restarts once at the next ``{``, so total work stays at most two passes.
    """
    first = last = None
    pos = 0
    for _ in range(_SCAN_PASSES):
        pass_first, pass_last, unclosed = _scan_objects(text, pos)
        first = first or pass_first
        last = pass_last or last
        if unclosed < 0:
            break
        pos = unclosed + 1
    return first, last


def _scan_objects(text: str, pos: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None, int]:
    """One pass from ``pos``: (first span, last span, start of an object left open or -1)."""
    first = last = None
    find, search = text.find, _STRUCTURE_RE.search
    while True:
        start = find("{", pos)
        if start < 0:
            return first, last, -1
        depth = 0
        pos = start
        while True:
            m = search(text, pos)
            if m is None:
                return first, last, start
            at = m.start()
            c = text[at]
            if c == '"':
                pos = _string_end(text, at + 1)
                if pos < 0:  # a string that never closes: neither does the object
                    return first, last, start
            elif c == "{":
                pos = _OPEN_RUN_RE.match(text, at).end()  # a run of braces is one step
                depth += pos - at
            else:
                pos = _CLOSE_RUN_RE.match(text, at).end()
                if pos - at < depth:
                    depth -= pos - at
                else:
                    pos = at + depth
                    last = (start, pos)
                    first = first or last
                    break


def _string_end(text: str, pos: int) -> int:
    """Index just past the closing quote of a JSON string whose body starts at ``pos``, or -1.

    Uses ``str.find`` (much faster than a regex character class on CJK text) and remembers the
    next quote across escapes, so a string full of escapes is still scanned once.
    """
    find = text.find
    quote = find('"', pos)
    while quote >= 0:
        backslash = find("\\", pos, quote)
        if backslash < 0:
            return quote + 1
        pos = backslash + 2
        if pos > quote:
            quote = find('"', pos)
    return -1


def _value_verdict(value: Any) -> int | None:
    """1 or 2 for the integer (or integral float) 1 or 2; None for anything else, bools included."""
    if type(value) in (int, float) and value in (1, 2):
        return int(value)
    return None


def _dict_rationale(obj: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


# --- fallbacks ------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _quoted_key_re(keys: tuple[str, ...]) -> re.Pattern[str]:
    """``"KEY":`` for any of ``keys``, with ASCII or “ ” quotes and an ASCII or full-width colon."""
    alternatives = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
    return re.compile(f"[{_QUOTES}](?:{alternatives})[{_QUOTES}]\\s*[:：]")


def _cascade(text: str, keys: tuple[str, ...]) -> tuple[int, int] | None:
    """Lenient key cascade: (verdict, position of the key used) or None. Every step is a bounded
    ``find``/``rfind`` or a single-character-class search, so the cascade is linear per key."""
    for key in keys:
        at = text.find(key)
        if at < 0:
            continue
        quoted = text.find(f'"{key}":', max(at - 1, 0))
        if quoted >= 0:
            d = _DIGIT_RE.search(text, quoted + len(key) + 3)
            if d is not None:
                return _DIGITS[d.group()], quoted
        # Report the key's opening quote, if any, so a loose rationale ends before it.
        key_at = at - 1 if at and text[at - 1] in _QUOTES else at
        d = _DIGIT_RE.search(text, at + len(key))
        if d is not None:
            return _DIGITS[d.group()], key_at
        # No digit follows the key anywhere, so only the last of "1 2 | ^" before its first
        # occurrence can satisfy the original's look-ahead ([12])(?=[^1|^2]*?KEY).
        before = max(text.rfind(c, 0, at) for c in "12|^")
        if before >= 0 and text[before] in "12":
            return int(text[before]), key_at
    return None


def _loose_rationale(text: str, keys: tuple[str, ...], verdict_at: int) -> str | None:
    """Rationale from text that is not valid JSON, e.g. a reshaped hint output with raw quotes:
    the value after a quoted rationale key, up to the verdict key (or the end), minus the
    ``",`` / ``"}`` that closed it; None when that leaves nothing."""
    m = _quoted_key_re(keys).search(text)
    if m is None:
        return None
    start = m.end()
    end = verdict_at if verdict_at >= start else len(text)
    value = text[start:end].strip()
    if value[:1] and value[0] in _QUOTES:
        value = value[1:]
    if end == len(text):
        value = value.removesuffix("}").rstrip()
    if value[-1:] in (",", "，"):
        value = value[:-1].rstrip()
    if value[-1:] and value[-1] in _QUOTES:
        value = value[:-1]
    return value or None


def _dedup(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(keys))
