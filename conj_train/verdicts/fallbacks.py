"""The text fallbacks of the verdict parser, for outputs with no verdict object: strict mode's
quoted verdict key, lenient mode's key cascade, and the loose rationale; each a linear scan (the rules
are in :mod:`conj_train.verdicts.parse`).
"""

from __future__ import annotations

import re

# The verdict digits (ASCII or full-width), quotes (ASCII or “ ”), colons (ASCII or full-width).
DIGITS = {"1": 1, "2": 2, "１": 1, "２": 2}
QUOTES = '"“”'
QUOTE_SET = frozenset(QUOTES)
COLON_SET = frozenset(":：")
SPACES_RE = re.compile(r"\s*")


def find_quoted_key(text: str, keys: tuple[str, ...]) -> tuple[int, int] | None:
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
            if text[pos - 1] in QUOTES and text[after : after + 1] in QUOTE_SET:
                colon = SPACES_RE.match(text, after + 1).end()
                if text[colon : colon + 1] in COLON_SET:
                    best = (pos - 1, colon + 1)
                    break
            pos = text.find(key, pos + 1)
    return best


def find_digit(text: str, pos: int, digits: str = "12１２") -> int:
    """Index of the first of ``digits`` (1/2, ASCII or full-width) at or after ``pos``, or -1; each
    ``find`` is bounded by the best match so far."""
    best = len(text)
    for digit in digits:
        found = text.find(digit, pos, best)
        if found >= 0:
            best = found
    return best if best < len(text) else -1


def find_strict_digit(text: str, pos: int) -> int:
    """The training parser's digit after a quoted verdict key: the first ASCII 1/2, as the original's
    ``"更好的回答":(.*?)([12])`` (so ``２ 或 1`` reads 1, as there); a full-width one only when no
    ASCII digit follows, where the original finds no verdict at all."""
    ascii_at = find_digit(text, pos, "12")
    return ascii_at if ascii_at >= 0 else find_digit(text, pos, "１２")


def cascade(text: str, keys: tuple[str, ...]) -> tuple[int, int] | None:
    """Lenient key cascade: (verdict, position of the key used) or None. Every step is a ``find``
    or ``rfind``, so the cascade is linear per key."""
    for key in keys:
        at = text.find(key)
        if at < 0:
            continue
        quoted = text.find(f'"{key}":', max(at - 1, 0))
        if quoted >= 0:
            digit = find_digit(text, quoted + len(key) + 3)
            if digit >= 0:
                return DIGITS[text[digit]], quoted
        # Report the key's opening quote, if any, so a loose rationale ends before it.
        key_at = at - 1 if at and text[at - 1] in QUOTES else at
        digit = find_digit(text, at + len(key))
        if digit >= 0:
            return DIGITS[text[digit]], key_at
        # No digit follows the key anywhere, so only the last of "1 2 | ^" before its first
        # occurrence can satisfy the original's look-ahead ([12])(?=[^1|^2]*?KEY).
        before = max(text.rfind(c, 0, at) for c in "12|^")
        if before >= 0 and text[before] in "12":
            return int(text[before]), key_at
    return None


def loose_rationale(text: str, keys: tuple[str, ...], verdict_at: int) -> str | None:
    """Rationale from text that is not valid JSON, e.g. a reshaped hint output with raw quotes:
    the value after a quoted rationale key, up to the verdict key (or the end), minus the
    ``",`` / ``"}`` that closed it; None when that leaves nothing."""
    quoted = find_quoted_key(text, keys)
    if quoted is None:
        return None
    start = quoted[1]
    end = verdict_at if verdict_at >= start else len(text)
    value = text[start:end].strip()
    if value[:1] and value[0] in QUOTES:
        value = value[1:]
    if end == len(text):
        value = value.removesuffix("}").rstrip()
    if value[-1:] in (",", "，"):
        value = value[:-1].rstrip()
    if value[-1:] and value[-1] in QUOTES:
        value = value[:-1]
    return value or None
