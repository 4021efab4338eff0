"""Con-J's training-data verdict parser (docs/method.md#strict-parser) as the original script runs it,
non-greedy regexes included: the baseline that bench/parse.py and bench/filter.py run in the same
process."""

from __future__ import annotations

import json
import re

_KEY = "更好的回答"


def _loads(s: str) -> object:
    try:
        return json.loads(s)
    except ValueError:
        return None


def original_strict(text: str) -> int | None:
    """Con-J's training parser as the spec describes it, with its non-greedy regexes."""
    text = text.strip().replace("”，", '",').replace("”,", '",')
    found: object = None
    if "```json" in text:
        blocks = re.findall(r"```json(.*?)```", text, re.DOTALL)
        if blocks:
            found = _loads(blocks[0])
            if isinstance(found, dict) and _KEY not in found:
                found = _loads(blocks[-1])
    if found is None and text.startswith("{"):
        found = _loads(text)
    if found is None and "{" in text and "}" in text:
        m = re.search(r"\{.*?\}", text, re.DOTALL)
        if m is not None:
            found = _loads(m.group(0))
            if isinstance(found, dict) and _KEY not in found:
                found = _loads(re.findall(r"\{.*?\}", text, re.DOTALL)[-1])
    if found is None:
        m = re.search(r'"更好的回答":(.*?)([12])', text, re.DOTALL)
        if m is not None:
            found = {_KEY: int(m.group(2))}
    if isinstance(found, str):  # the script's branch for a double-encoded object
        found = _loads(found)
    if isinstance(found, dict) and found.get(_KEY) in (1, 2):
        return found[_KEY]
    return None
