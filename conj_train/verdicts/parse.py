"""Verdict parsers for judge outputs: ``strict`` builds training data, ``lenient`` scores evaluations.

Both follow Con-J's two parsers (docs/method.md#verdict-parsing) and run in linear time: no backtracking
regular expressions over model output (``str.find``/``rfind`` plus two anchored patterns), a
bounded number of JSON decodes, never ``eval``.

This module holds the parser's entry, the verdict classes and the rules below; the JSON stage is
:mod:`conj_train.verdicts.json_stage`, the fallbacks :mod:`conj_train.verdicts.fallbacks`, and where the
verdict digit sits (for verdict probabilities) :mod:`conj_train.verdicts.position`.

JSON stage (both modes); the first object that holds a verdict key wins:

1. the first ```` ```json ```` fenced block, then the last one;
2. objects decoded in place (``JSONDecoder.raw_decode``) at ``{`` positions: from the left (the first
   is the whole text when it starts with ``{``; after an object, the next ``{`` after its end), then
   from the right. At most ``_OBJECT_ATTEMPTS`` (:mod:`conj_train.verdicts.json_stage`) attempts per side, so an adversarial text costs a
   fixed number of linear decodes. A candidate is thus always a balanced, valid JSON object.

If an object holds a verdict key, its value decides and nothing else is tried: the integer 1 or 2
counts, and so do 1.0 / 2.0 (the original's ``value in [1, 2]`` test accepts them). Strings ("1",
"回答2"), booleans and other numbers give ``bad_value``; the original would take ``true`` as 1
through Python's ``True == 1``, which we treat as an accident.

Otherwise a fallback runs:

- ``strict``: the first quoted verdict key (``"更好的回答":``; ASCII or “ ” quotes, ASCII or
  full-width colon) and then the first ASCII digit 1/2 after it, as the original's ``([12])`` (so
  ``２ 或 1`` gives 1); a full-width digit only when no ASCII one follows (the original: no verdict).
  Lenient mode takes the first digit of either kind (the original evaluator's ``([12１２])``: 2). Verdict keys default
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

from collections.abc import Sequence
from typing import NamedTuple

from conj_train.errors import ConjError
from conj_train.verdicts.fallbacks import DIGITS, cascade, find_quoted_key, find_strict_digit, loose_rationale
from conj_train.verdicts.json_stage import dict_rationale, json_stage, value_verdict, whole_object

# "rewardbench": RewardBench's port of the evaluation parser (conj_train.verdicts.rewardbench), for
# its leaderboard protocol.
MODES = ("strict", "lenient", "rewardbench")
# The JSON keys Con-J's prompts ask for, Chinese and English; the prompt templates
# (conj_train.prompts.templates) take their keys from here, so the parser and the prompts agree.
ZH_VERDICT_KEY, EN_VERDICT_KEY = "更好的回答", "better_answer"
ZH_RATIONALE_KEY, EN_RATIONALE_KEY = "原因", "reason"
DEFAULT_VERDICT_KEYS = (ZH_VERDICT_KEY, EN_VERDICT_KEY, "better answer", "betterAnswer")
DEFAULT_RATIONALE_KEYS = (ZH_RATIONALE_KEY, EN_RATIONALE_KEY)
# The original evaluator's cascade (docs/method.md#lenient-parser), in its order; spaces inside keys
# are part of the keys.
LENIENT_CASCADE = (
    "更好的回答", "更好回答", "更好得回答", "更好地回答", "better_answer", "better answer", "更好答案",
    "更好得答案", "更好的答案", "更好地答案", "更佳回答", "更佳答案", "更好答", "最佳答案", "更好答 案",
    "更好 的 回答 ", "betterAnswer", "更好 的 回应 ", "更好得回应回答", "答案", "回答",
)  # fmt: skip

POSITIVE, NEGATIVE, UNPARSEABLE = "positive", "negative", "unparseable"
# Unparseable reasons beyond the JSON stage's (conj_train.verdicts.json_stage: no_json, invalid_json,
# no_verdict_key); "truncated" comes from the generation's finish reason, not from the text.
EMPTY, BAD_VALUE, TRUNCATED = "empty", "bad_value", "truncated"


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
    """Parse one judge output in ``strict`` (training data), ``lenient`` (evaluation) or
    ``rewardbench`` (RewardBench's reading, :mod:`conj_train.verdicts.rewardbench`) mode."""
    if mode not in MODES:
        raise ConjError(f"unknown verdict parser mode {mode!r} (expected one of {', '.join(MODES)})")
    vkeys = as_keys(verdict_keys, DEFAULT_VERDICT_KEYS)
    rkeys = as_keys(rationale_keys, DEFAULT_RATIONALE_KEYS)
    text = text.strip() if mode == "strict" else text.replace("\n", " ").strip()
    if not text:
        return ParsedVerdict(None, None, EMPTY)
    if mode == "rewardbench":
        from conj_train.verdicts.rewardbench import parse_rewardbench

        verdict, rationale, how = parse_rewardbench(text)
        if verdict is None:
            return ParsedVerdict(None, None, BAD_VALUE if how == "bad_value" else "no_verdict_key")
        return ParsedVerdict(verdict, rationale, None, how)

    # Strict mode (the training parser) ranks the first key above the others, as the original, which
    # knows only "更好的回答": an object or quoted key holding it wins over an earlier "better_answer".
    groups = (vkeys[:1], vkeys[1:]) if mode == "strict" and len(vkeys) > 1 else (vkeys,)
    found = whole_object(text, vkeys)
    reason = ""
    for group in groups if found is None else ():
        found, reason = json_stage(text, group)
        if found is not None:
            break
    if found is None and mode == "strict" and "”" in text:
        text = text.replace("”，", '",').replace("”,", '",')
        for group in groups:
            found, reason = json_stage(text, group)
            if found is not None:
                break
    if found is not None:
        obj, key, via = found
        verdict = value_verdict(obj[key])
        return ParsedVerdict(verdict, dict_rationale(obj, rkeys), None if verdict else BAD_VALUE, via)

    if mode == "strict":
        quoted = next((q for q in (find_quoted_key(text, g) for g in groups) if q is not None), None)
        if quoted is None:
            return ParsedVerdict(None, None, reason)
        digit = find_strict_digit(text, quoted[1])
        if digit < 0:
            return ParsedVerdict(None, None, BAD_VALUE)
        return ParsedVerdict(DIGITS[text[digit]], loose_rationale(text, rkeys, quoted[0]), None, "key")

    keys = LENIENT_CASCADE if verdict_keys is None else dedup_keys(vkeys + LENIENT_CASCADE)
    hit = cascade(text, keys)
    if hit is None:
        return ParsedVerdict(None, None, reason)
    verdict, key_at = hit
    return ParsedVerdict(verdict, loose_rationale(text, rkeys, key_at), None, "cascade")


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


def as_keys(keys: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """``keys`` as a tuple (``default`` when None)."""
    if keys is None:
        return default
    return (keys,) if isinstance(keys, str) else tuple(keys)  # a lone string is one key, not letters


def dedup_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """``keys`` without repeats, first occurrence kept."""
    return tuple(dict.fromkeys(keys))
