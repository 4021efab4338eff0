"""Verdict parsers for judge outputs: ``strict`` builds training data, ``lenient`` scores evaluations.

Both follow Con-J's two parsers (conj-spec 5.1 and 5.2) and run in linear time: no backtracking
regular expressions over model output (``str.find``/``rfind`` plus two anchored patterns), a
bounded number of JSON decodes, never ``eval``.

JSON stage (both modes); the first object that holds a verdict key wins:

1. the first ```` ```json ```` fenced block, then the last one;
2. objects decoded in place (``JSONDecoder.raw_decode``) at ``{`` positions: from the left (the first
   is the whole text when it starts with ``{``; after an object, the next ``{`` after its end), then
   from the right. At most ``_OBJECT_ATTEMPTS`` attempts per side, so an adversarial text costs a
   fixed number of linear decodes. A candidate is thus always a balanced, valid JSON object.

If an object holds a verdict key, its value decides and nothing else is tried: the integer 1 or 2
counts, and so do 1.0 / 2.0 (the original's ``value in [1, 2]`` test accepts them). Strings ("1",
"回答2"), booleans and other numbers give ``bad_value``; the original would take ``true`` as 1
through Python's ``True == 1``, which we treat as an accident.

Otherwise a fallback runs:

- ``strict``: the first quoted verdict key (``"更好的回答":``; ASCII or “ ” quotes, ASCII or
  full-width colon) and then the first digit 1/2 after it (ASCII or full-width). Verdict keys default
  to the Chinese key and the English prompt's ``better_answer`` (plus ``better answer``,
  ``betterAnswer``). This is how reshaped hint outputs with raw newlines and quotes parse.
- ``lenient``: the spec's key cascade (:data:`LENIENT_CASCADE`, in order). For the first key present:
  ``"KEY":`` then the first 1/2 after it, else ``KEY`` then the first 1/2 after it, else a 1/2 that is
  the last of ``1 2 | ^`` before the key (what the original's look-ahead regex finds).

Lenient mode first replaces newlines with spaces, as the original does. Strict mode replaces the
Chinese closing quote + comma (``”，`` / ``”,``) with ``",`` when the text as written yields no
verdict object: the original always replaces, which breaks valid JSON whose rationale contains
``”，`` (common in Chinese). With ASCII-quoted keys the verdict is then the same either way (the
original's key regex finds it) and the rationale survives here; with full-width-quoted keys
(``“更好的回答”：1``) the original finds no verdict and this parser does.

Strict mode ranks the verdict keys: the first (``更好的回答``) anywhere in the text wins over the
others, as in the original, which reads only that key; the others (``better_answer``...) are read
only when it is absent (the original reads them never: docs/differences.md). A fenced block that
holds a JSON *string* of the object is decoded once more, as the original's ``str`` branch does.

Other deliberate differences from the original code, all in edge cases: the last fenced block is
really parsed (the original's second ``re.search`` almost always misses it); ``{...}`` candidates
are whole JSON objects rather than "up to the first ``}``", so nested objects parse; more than the
first and last object may be tried; strict mode runs its quoted-key fallback also when a parsed
object lacks the key; ``demjson`` is not used (the training parser never imported it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
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
_QUOTES = '"“”'
_QUOTE_SET = frozenset(_QUOTES)
_COLON_SET = frozenset(":：")
_SPACES_RE = re.compile(r"\s*")
_FENCE = "```json"
_DECODER = json.JSONDecoder()
_FAILED = object()  # a candidate that did not parse
# From each end of the text: "{" positions looked at, and JSON decodes tried among them.
_BRACES_VISITED = 32
_OBJECT_ATTEMPTS = 8
_OBJECT_START_RE = re.compile(r'\{\s*["}]')


class ParsedVerdict(NamedTuple):
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
) -> ParsedVerdict:
    """Parse one judge output in ``strict`` (training data) or ``lenient`` (evaluation) mode."""
    if mode not in MODES:
        raise ConjError(f"unknown verdict parser mode {mode!r} (expected one of {', '.join(MODES)})")
    vkeys = _as_keys(verdict_keys, DEFAULT_VERDICT_KEYS)
    rkeys = _as_keys(rationale_keys, DEFAULT_RATIONALE_KEYS)
    text = text.strip() if mode == "strict" else text.replace("\n", " ").strip()
    if not text:
        return ParsedVerdict(None, None, EMPTY)

    # Strict mode (the training parser) ranks the first key above the others, as the original, which
    # knows only "更好的回答": an object or quoted key holding it wins over an earlier "better_answer".
    groups = (vkeys[:1], vkeys[1:]) if mode == "strict" and len(vkeys) > 1 else (vkeys,)
    found = _whole_object(text, vkeys)
    reason = ""
    for group in groups if found is None else ():
        found, reason = _json_stage(text, group)
        if found is not None:
            break
    if found is None and mode == "strict" and "”" in text:
        text = text.replace("”，", '",').replace("”,", '",')
        for group in groups:
            found, reason = _json_stage(text, group)
            if found is not None:
                break
    if found is not None:
        obj, key, via = found
        verdict = _value_verdict(obj[key])
        return ParsedVerdict(verdict, _dict_rationale(obj, rkeys), None if verdict else BAD_VALUE, via)

    if mode == "strict":
        quoted = next((q for q in (_find_quoted_key(text, g) for g in groups) if q is not None), None)
        if quoted is None:
            return ParsedVerdict(None, None, reason)
        digit = _find_digit(text, quoted[1])
        if digit < 0:
            return ParsedVerdict(None, None, BAD_VALUE)
        return ParsedVerdict(_DIGITS[text[digit]], _loose_rationale(text, rkeys, quoted[0]), None, "key")

    keys = LENIENT_CASCADE if verdict_keys is None else _dedup(vkeys + LENIENT_CASCADE)
    hit = _cascade(text, keys)
    if hit is None:
        return ParsedVerdict(None, None, reason)
    verdict, key_at = hit
    return ParsedVerdict(verdict, _loose_rationale(text, rkeys, key_at), None, "cascade")


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


def unparseable_reason(parsed: ParsedVerdict, finish_reason: str | None = None) -> str | None:
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
    seen = 0  # 0: no candidate, 1: candidates that did not parse (or were not objects), 2: an object
    for via, value in _json_values(text):
        if not isinstance(value, dict):
            seen = max(seen, 1)
            continue
        seen = 2
        for key in keys:
            if key in value:
                return (value, key, via), ""
    return None, (NO_JSON, INVALID_JSON, NO_VERDICT_KEY)[seen]


def _whole_object(text: str, keys: tuple[str, ...]) -> tuple[dict, str, str] | None:
    """The common case first: a text that is one JSON object with a verdict key is what
    :func:`_json_stage` would return for it (its first candidate), without the generator."""
    if not text.startswith("{") or not text.endswith("}") or _FENCE in text or not _OBJECT_START_RE.match(text):
        return None
    try:
        value, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if end != len(text) or type(value) is not dict:
        return None
    for key in keys:
        if key in value:
            return value, key, "json"
    return None


def _json_values(text: str) -> Iterator[tuple[str, object]]:
    """Decoded JSON candidates in the order tried, lazily; ``_FAILED`` stands for a parse error.

    Objects are decoded in place with ``raw_decode`` at ``{`` positions: the first ones from the
    left (the first is the whole text when it starts with ``{``), then the last ones from the right.
    Each side looks at most at ``_BRACES_VISITED`` braces and decodes at most ``_OBJECT_ATTEMPTS``
    of them (only where ``{`` is followed by ``"`` or ``}``), so a fixed number of linear decodes
    run whatever the text: this is what keeps adversarial inputs linear.
    """
    if _FENCE in text:
        first, last = _fence_spans(text)
        for span in (first, last if last != first else None):
            if span is not None:
                value = _decode(text, span)
                if isinstance(value, str):  # a JSON string holding the object: decoded once more,
                    value = _decode(value, (0, len(value)))  # as the original's str branch does
                yield "fenced", value
    find, rfind, starts_object = text.find, text.rfind, _OBJECT_START_RE.match
    tried: set[int] = set()
    pos, visited = find("{"), 0
    while pos >= 0 and len(tried) < _OBJECT_ATTEMPTS and visited < _BRACES_VISITED:
        visited += 1
        if starts_object(text, pos) is None:  # cannot start an object: skip without decoding
            if visited == 1:
                yield "object", _FAILED  # only to record that a candidate failed
            pos = find("{", pos + 1)
            continue
        tried.add(pos)
        value, end = _raw_decode(text, pos)
        yield ("json" if pos == 0 and end == len(text) else "object"), value
        pos = find("{", end if end > pos else pos + 1)
    pos, visited, attempts = rfind("{"), 0, 0
    while pos >= 0 and attempts < _OBJECT_ATTEMPTS and visited < _BRACES_VISITED:
        visited += 1
        if pos not in tried and starts_object(text, pos) is not None:
            attempts += 1
            yield "object", _raw_decode(text, pos)[0]
        pos = rfind("{", 0, pos)


def _decode(text: str, span: tuple[int, int]) -> object:
    try:
        return _DECODER.decode(text[span[0] : span[1]])
    except (ValueError, RecursionError):  # RecursionError: very deep nesting
        return _FAILED


def _raw_decode(text: str, pos: int) -> tuple[object, int]:
    """The JSON value starting at ``pos`` and where it ends, or (``_FAILED``, ``pos``)."""
    try:
        return _DECODER.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return _FAILED, pos


def _fence_spans(text: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """Inner spans of the first and the last ```` ```json ... ``` ```` block (None if unclosed)."""
    out: list[tuple[int, int] | None] = []
    for opener in (text.find(_FENCE), text.rfind(_FENCE)):
        start = opener + len(_FENCE)
        end = text.find("```", start)
        out.append((start, end) if end >= 0 else None)
    return out[0], out[1]


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


# --- where the verdict digit is ------------------------------------------------------------------


def verdict_position(text: str, verdict: int | None, verdict_keys: Sequence[str] | None = None) -> int | None:
    """Character index of the digit that states ``verdict`` right after a verdict key in ``text``.

    ``KEY`` (quoted or not), an optional closing quote, a colon (ASCII or full-width), an optional
    opening quote, then the digit (ASCII or full-width); the first such digit equal to ``verdict``
    counts. ``None`` when the verdict is None or the text has no such place (e.g. a verdict the
    lenient parser found in free text). Verdict probabilities are read at this position
    (:mod:`conj_train.probability`).
    """
    if verdict not in (1, 2):
        return None
    best: int | None = None
    for key in _dedup(_as_keys(verdict_keys, DEFAULT_VERDICT_KEYS)):
        pos = text.find(key)
        while pos >= 0 and (best is None or pos < best):
            at = _digit_after_key(text, pos + len(key))
            if at >= 0 and _DIGITS[text[at]] == verdict:
                best = at
                break
            pos = text.find(key, pos + 1)
    return best


def _digit_after_key(text: str, i: int) -> int:
    """Index of the digit in ``["]\\s*[:：]\\s*["]digit`` starting at ``i``, or -1."""
    if text[i : i + 1] in _QUOTE_SET:
        i += 1
    i = _SPACES_RE.match(text, i).end()
    if text[i : i + 1] not in _COLON_SET:
        return -1
    i = _SPACES_RE.match(text, i + 1).end()
    if text[i : i + 1] in _QUOTE_SET:
        i += 1
    return i if text[i : i + 1] in _DIGITS else -1


# --- fallbacks ------------------------------------------------------------------------------------


def _find_quoted_key(text: str, keys: tuple[str, ...]) -> tuple[int, int] | None:
    """Earliest ``"KEY":`` of any key (ASCII or “ ” quotes, ASCII or full-width colon, spaces allowed
    before the colon), as (index of its opening quote, index just past the colon), or None.

    ``str.find`` per key instead of one alternation regex: several times faster on CJK text, and
    still linear (each occurrence is looked at once, and only before the best match so far).
    """
    best: tuple[int, int] | None = None
    for key in keys:
        pos = text.find(key, 1)
        while pos >= 0 and (best is None or pos <= best[0]):
            after = pos + len(key)
            if text[pos - 1] in _QUOTES and text[after : after + 1] in _QUOTE_SET:
                colon = _SPACES_RE.match(text, after + 1).end()
                if text[colon : colon + 1] in _COLON_SET:
                    best = (pos - 1, colon + 1)
                    break
            pos = text.find(key, pos + 1)
    return best


def _find_digit(text: str, pos: int) -> int:
    """Index of the first 1/2 (ASCII or full-width) at or after ``pos``, or -1; each ``find`` is
    bounded by the best match so far."""
    best = len(text)
    for digit in "12１２":
        found = text.find(digit, pos, best)
        if found >= 0:
            best = found
    return best if best < len(text) else -1


def _cascade(text: str, keys: tuple[str, ...]) -> tuple[int, int] | None:
    """Lenient key cascade: (verdict, position of the key used) or None. Every step is a ``find``
    or ``rfind``, so the cascade is linear per key."""
    for key in keys:
        at = text.find(key)
        if at < 0:
            continue
        quoted = text.find(f'"{key}":', max(at - 1, 0))
        if quoted >= 0:
            digit = _find_digit(text, quoted + len(key) + 3)
            if digit >= 0:
                return _DIGITS[text[digit]], quoted
        # Report the key's opening quote, if any, so a loose rationale ends before it.
        key_at = at - 1 if at and text[at - 1] in _QUOTES else at
        digit = _find_digit(text, at + len(key))
        if digit >= 0:
            return _DIGITS[text[digit]], key_at
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
    quoted = _find_quoted_key(text, keys)
    if quoted is None:
        return None
    start = quoted[1]
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


def _as_keys(keys: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if keys is None:
        return default
    return (keys,) if isinstance(keys, str) else tuple(keys)  # a lone string is one key, not letters


def _dedup(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(keys))
