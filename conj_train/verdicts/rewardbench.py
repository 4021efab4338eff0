"""RewardBench's reading of a Con-J judgment (parser mode ``rewardbench``), for its leaderboard protocol.

allenai/reward-bench scores Con-J with its own port of Con-J's evaluation parser
(``rewardbench/generative.py``: ``con_j_evaluate``), which differs from the original in edge cases
(docs/benchmarks.md): here the same rules are written again, each a linear scan, so that
``recipes/con-j-qwen2-7b/eval_rewardbench.yaml`` reads verdicts as the leaderboard did.

1. Newlines become spaces, the text is stripped.
2. JSON, the first candidate that is a dict holding ``更好的回答`` wins: each ```` ```json ... ``` ````
   block in order (when the text has one); else the whole text; then each ``{`` ... first ``}`` span
   in order (a non-greedy ``{.*?}``, so nested objects do not parse).
3. Otherwise the key cascade (:data:`conj_train.verdicts.LENIENT_CASCADE`'s keys, RewardBench's
   spelling ``更好 的 回答`` / ``更好 的 回应`` without the trailing space); for the first key present
   whose search finds a digit: ``"KEY"`` + spaces + ``:`` then the first 1/2 (ASCII or full-width)
   after it; else ``KEY`` then the first 1/2 after it; else the first 1/2 anywhere before the key's last
   occurrence.
4. The value, as text (``str(value)``, full-width digits mapped), must be ``1`` or ``2``: the JSON
   string ``"1"`` counts, ``1.0`` and ``true`` do not.
"""

from __future__ import annotations

import json
from typing import Any

from conj_train.verdicts.fallbacks import DIGITS, find_digit
from conj_train.verdicts.parse import ZH_RATIONALE_KEY, ZH_VERDICT_KEY

VERDICT_KEY = ZH_VERDICT_KEY
RATIONALE_KEY = ZH_RATIONALE_KEY
# rewardbench/generative.py con_j_evaluate's keywords, in its order.
KEYWORDS = (
    "更好的回答", "更好回答", "更好得回答", "更好地回答", "better_answer", "better answer", "更好答案",
    "更好得答案", "更好的答案", "更好地答案", "更佳回答", "更佳答案", "更好答", "最佳答案", "更好答 案",
    "更好 的 回答", "betterAnswer", "更好 的 回应", "更好得回应回答", "答案", "回答",
)  # fmt: skip
_FULL_WIDTH = {"１": "1", "２": "2"}


def _dict_with_key(candidate: str) -> dict | None:
    try:
        obj = json.loads(candidate)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and VERDICT_KEY in obj else None


def _spans(text: str, opener: str, closer: str) -> list[str]:
    """The non-overlapping ``opener ... first closer`` contents, in order (``re.findall`` of a
    non-greedy pattern)."""
    out, pos = [], 0
    while True:
        start = text.find(opener, pos)
        if start < 0:
            return out
        end = text.find(closer, start + len(opener))
        if end < 0:
            return out
        out.append(text[start + len(opener) : end])
        pos = end + len(closer)


def _json_object(text: str) -> dict | None:
    if "```json" in text:
        for block in _spans(text, "```json", "```"):
            if (obj := _dict_with_key(block)) is not None:
                return obj
    if (obj := _dict_with_key(text)) is not None:
        return obj
    for inner in _spans(text, "{", "}"):
        if (obj := _dict_with_key("{" + inner + "}")) is not None:
            return obj
    return None


def _quoted_key_digit(text: str, key: str) -> int:
    """Index of the digit of ``"KEY"\\s*:\\s*.*?([12１２])``, or -1."""
    quoted = f'"{key}"'
    at = text.find(quoted)
    while at >= 0:
        i = at + len(quoted)
        while i < len(text) and text[i].isspace():
            i += 1
        if text[i : i + 1] == ":":
            return find_digit(text, i + 1)  # no digit after this one: none after any later one
        at = text.find(quoted, at + 1)
    return -1


def _cascade(text: str) -> int:
    for key in KEYWORDS:
        if key not in text:
            continue
        digit = _quoted_key_digit(text, key)
        if digit < 0:
            digit = find_digit(text, text.find(key) + len(key))
        if digit < 0:
            last = text.rfind(key)
            digit = find_digit(text[:last], 0)
        if digit >= 0:
            return DIGITS[text[digit]]
    return 0


def _value(value: Any) -> int | None:
    text = str(value)
    text = _FULL_WIDTH.get(text, text)
    return {"1": 1, "2": 2}.get(text)


def parse_rewardbench(text: str) -> tuple[int | None, str | None, str]:
    """(verdict 1 / 2 or None, rationale or None, how: ``json`` / ``cascade`` / ``bad_value`` /
    ``no_verdict``) as RewardBench's ``con_j_evaluate`` reads ``text``."""
    gen = text.replace("\n", " ").strip()
    obj = _json_object(gen)
    if obj is not None:
        verdict = _value(obj[VERDICT_KEY])
        rationale = obj.get(RATIONALE_KEY)
        return verdict, rationale if isinstance(rationale, str) else None, "json" if verdict else "bad_value"
    verdict = _cascade(gen)
    return (verdict, None, "cascade") if verdict else (None, None, "no_verdict")
