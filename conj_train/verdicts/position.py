"""Where the verdict digit is in a judge output: the position verdict probabilities are read at
(:mod:`conj_train.inference.probability`).
"""

from __future__ import annotations

from collections.abc import Sequence

from conj_train.verdicts.fallbacks import COLON_SET, DIGITS, QUOTE_SET, SPACES_RE
from conj_train.verdicts.parse import DEFAULT_VERDICT_KEYS, as_keys, dedup_keys


def verdict_position(text: str, verdict: int | None, verdict_keys: Sequence[str] | None = None) -> int | None:
    """Character index of the digit that states ``verdict`` right after a verdict key in ``text``.

    ``KEY`` (quoted or not), an optional closing quote, a colon (ASCII or full-width), an optional
    opening quote, then the digit (ASCII or full-width); the first such digit equal to ``verdict``
    counts. ``None`` when the verdict is None or the text has no such place (e.g. a verdict the
    lenient parser found in free text). Verdict probabilities are read at this position
    (:mod:`conj_train.inference.probability`).
    """
    if verdict not in (1, 2):
        return None
    best: int | None = None
    for key in dedup_keys(as_keys(verdict_keys, DEFAULT_VERDICT_KEYS)):
        pos = text.find(key)
        while pos >= 0 and (best is None or pos < best):
            at = _digit_after_key(text, pos + len(key))
            if at >= 0 and DIGITS[text[at]] == verdict:
                best = at
                break
            pos = text.find(key, pos + 1)
    return best


def _digit_after_key(text: str, i: int) -> int:
    """Index of the digit in ``["]\\s*[:：]\\s*["]digit`` starting at ``i``, or -1."""
    if text[i : i + 1] in QUOTE_SET:
        i += 1
    i = SPACES_RE.match(text, i).end()
    if text[i : i + 1] not in COLON_SET:
        return -1
    i = SPACES_RE.match(text, i + 1).end()
    if text[i : i + 1] in QUOTE_SET:
        i += 1
    return i if text[i : i + 1] in DIGITS else -1
