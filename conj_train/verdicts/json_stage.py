"""The JSON stage of the verdict parser: fenced blocks and ``{...}`` objects decoded in place, in
linear time (the rules are in :mod:`conj_train.verdicts.parse`, which runs this stage in both modes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

# Unparseable reasons of the JSON stage (the others are in conj_train.verdicts.parse).
NO_JSON, INVALID_JSON, NO_VERDICT_KEY = "no_json", "invalid_json", "no_verdict_key"
_FENCE = "```json"
_DECODER = json.JSONDecoder()
_FAILED = object()  # a candidate that did not parse
# From each end of the text: "{" positions looked at, and JSON decodes tried among them.
_BRACES_VISITED = 32
_OBJECT_ATTEMPTS = 8
_OBJECT_START_RE = re.compile(r'\{\s*["}]')


def json_stage(text: str, keys: tuple[str, ...]) -> tuple[tuple[dict, str, str] | None, str]:
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


def whole_object(text: str, keys: tuple[str, ...]) -> tuple[dict, str, str] | None:
    """The common case first: a text that is one JSON object with a verdict key is what
    :func:`json_stage` would return for it (its first candidate), without the generator."""
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


def value_verdict(value: Any) -> int | None:
    """1 or 2 for the integer (or integral float) 1 or 2; None for anything else, bools included."""
    if type(value) in (int, float) and value in (1, 2):
        return int(value)
    return None


def dict_rationale(obj: dict, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` whose value in ``obj`` is a string, or None."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None
