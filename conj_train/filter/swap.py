"""Both answer orders in training: each contrastive pair again with the two answers swapped.

Beyond the original (off by default; the filter's ``swap_orders``). A small judge starts with a strong
position prior (it names slot 1 whatever the answers say), and label balancing alone only moves that
prior to the other slot. Writing every pair in both orders gives DPO the same contrast twice with the
slots exchanged, so the only thing both rows reward is the content.

The swapped row of a pair:

- **prompt**: the judge prompt re-rendered by its template with ``answer1`` and ``answer2`` exchanged.
  The sampling run's prompt record holds the question and the answers but not the rendered
  conversation history, so the history block is recovered from the stored prompt itself: the
  template is rendered with sentinels, every literal part of it and the known question and answers
  are matched exactly, and what is left is the history block. The re-rendered original must equal
  the stored prompt byte for byte, or the pair is not swapped (counted as ``unswappable``).
- **judgments**: the verdict digit at the verdict key (:func:`verdict_position`) becomes the other
  slot, and slot references in the rationale are exchanged: ``answer/response/assistant/option 1`` <->
  ``... 2`` (any case, an optional ``#``/``no.``), ``first/second answer|response``, and in Chinese
  ``回答/答案/选项 1`` <-> ``2`` and ``第一个/第二个``. An unparseable judgment keeps its (missing) verdict.
  Other wordings ("the former", "the latter", "A"/"B") are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from conj_train.prompts.templates import JudgeTemplate
from conj_train.verdicts.fallbacks import DIGITS
from conj_train.verdicts.position import verdict_position

_SENTINELS = ("\x00Q\x00", "\x00A1\x00", "\x00A2\x00", "\x00C\x00")
_OTHER_DIGIT = {"1": "2", "2": "1", "１": "２", "２": "１"}
_EN_SLOT = re.compile(r"\b(answers?|responses?|assistants?|options?|candidates?|outputs?)(\s*(?:#|no\.)?\s*)([12])\b",
                      re.IGNORECASE)
_EN_ORDINAL = re.compile(r"\b(first|second)(\s+(?:answer|response|one|option|output)s?)\b", re.IGNORECASE)
_ZH_SLOT = re.compile(r"(回答|答案|选项)(\s*)([12１２])")
_ZH_ORDINAL = re.compile(r"第([一二])个")
_ORDINALS = {"first": "second", "second": "first", "一": "二", "二": "一"}


def _same_case(word: str, like: str) -> str:
    return word.capitalize() if like[:1].isupper() else word


def swap_slot_references(text: str) -> str:
    """``text`` with every slot reference it names by number or ordinal pointed at the other slot."""
    text = _EN_SLOT.sub(lambda m: m[1] + m[2] + _OTHER_DIGIT[m[3]], text)
    text = _EN_ORDINAL.sub(lambda m: _same_case(_ORDINALS[m[1].lower()], m[1]) + m[2], text)
    text = _ZH_SLOT.sub(lambda m: m[1] + m[2] + _OTHER_DIGIT[m[3]], text)
    return _ZH_ORDINAL.sub(lambda m: "第" + _ORDINALS[m[1]] + "个", text)


def swap_judgment(text: str, verdict: int | None, verdict_keys: Sequence[str]) -> str:
    """A judgment as it reads with the answers swapped: other verdict digit, other slot references."""
    at = verdict_position(text, verdict, verdict_keys)
    if at is None:
        return swap_slot_references(text)
    head, digit, tail = text[:at], text[at], text[at + 1:]
    if DIGITS.get(digit) not in (1, 2):
        return swap_slot_references(text)
    return swap_slot_references(head) + _OTHER_DIGIT[digit] + swap_slot_references(tail)


def swapped_prompt(template: JudgeTemplate, prompt: str, question: str, answer1: str, answer2: str) -> str | None:
    """``prompt`` (rendered by ``template`` from ``question`` and the answers in this order) with the
    answers exchanged, or None when the stored prompt is not this template's rendering of them."""
    values = dict(zip(_SENTINELS, (question, answer1, answer2), strict=False))
    pattern, seen_context = [], False
    for part in re.split("(" + "|".join(map(re.escape, _SENTINELS)) + ")", template.render(*_SENTINELS)):
        if part == _SENTINELS[3]:  # the history block: unknown here, the same text wherever it recurs
            pattern.append("(?P=ctx)" if seen_context else "(?P<ctx>.*?)")
            seen_context = True
        else:
            pattern.append(re.escape(values.get(part, part)))
    found = re.fullmatch("".join(pattern), prompt, re.DOTALL)
    if found is None:
        return None
    block = found.groupdict().get("ctx") or ""
    if template.render(question, answer1, answer2, block) != prompt:
        return None
    return template.render(question, answer2, answer1, block)


def swapped_row(row: dict[str, Any], record: dict[str, Any], template: JudgeTemplate,
                verdicts: tuple[int | None, int | None]) -> dict[str, Any] | None:
    """The dataset row ``row`` (built from prompt record ``record``) with the answers swapped, or None.

    ``verdicts`` are the parsed verdicts of the chosen and rejected judgments.
    """
    user = row["prompt"][-1]
    swapped = swapped_prompt(template, user["content"], record["question"], record["answer1"], record["answer2"])
    if swapped is None:
        return None
    keys = [template.verdict_key]
    return {
        **row,
        "prompt": [*row["prompt"][:-1], {**user, "content": swapped}],
        "chosen": [{"role": "assistant", "content": swap_judgment(row["chosen"][0]["content"], verdicts[0], keys)}],
        "rejected": [{"role": "assistant",
                      "content": swap_judgment(row["rejected"][0]["content"], verdicts[1], keys)}],
        "pair_type": row["pair_type"] + "+swapped",
        "label": 3 - row["label"],
    }
