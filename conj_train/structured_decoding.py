"""Structured decoding of a judgment: the regular expression a constrained judge's output must match.

Opt-in at evaluation and serving (``conj eval --structured_output true``, ``Judge(structured=True)``):
the engine only lets the judge write ``{"原因": "<JSON string>", "更好的回答": 1|2}`` (the template's
keys), so every judgment parses. Never used when sampling training judgments: there an unparseable
judgment is a Con-J negative, and constraining it away would change what the judge learns from.

A regular expression rather than a JSON schema because the judge's answer is pre-filled: the
engine generates the continuation of ``' {"原因":'``, which is not a JSON document of its own, and
vLLM's ``structured_outputs`` (``regex``) constrains exactly the generated text. The expression is
the judgment's token sequence with what the prefill already wrote removed.

Offered by the ``vllm`` engine and the ``openai`` engine on a vLLM server; the ``hf`` engine refuses
it (:data:`conj_train.engines.hf.STRUCTURED_NOT_OFFERED`).
"""

from __future__ import annotations

import re

from conj_train.errors import ConjError

# A JSON string's body: no raw quote, backslash or control character; escapes as JSON allows them.
JSON_STRING_BODY = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*'
# Between two tokens of the judgment: at most one space (a bound, so the constraint cannot loop on
# whitespace until max_new_tokens).
_GAP = " ?"


def _pieces(rationale_key: str, verdict_key: str) -> list[tuple[str, str]]:
    """The judgment as ``(kind, text)`` pieces: ``lit`` (literal text), ``gap`` or ``re`` (a pattern)."""
    return [
        ("gap", ""), ("lit", "{"), ("gap", ""), ("lit", f'"{rationale_key}"'), ("gap", ""), ("lit", ":"),
        ("gap", ""), ("re", f'"{JSON_STRING_BODY}"'), ("gap", ""), ("lit", ","), ("gap", ""),
        ("lit", f'"{verdict_key}"'), ("gap", ""), ("lit", ":"), ("gap", ""), ("re", "[12]"), ("gap", ""),
        ("lit", "}"),
    ]


def judgment_regex(rationale_key: str = "原因", verdict_key: str = "更好的回答", prefill: str = "") -> str:
    """The pattern the text generated after ``prefill`` must match for ``prefill + text`` to be a judgment.

    ``prefill`` may end anywhere before the rationale's string starts (``''``, ``' {"原因":'``, ...);
    a prefill that writes part of the rationale or the verdict is refused (ConjError).
    """
    pieces = _pieces(rationale_key, verdict_key)
    rest = prefill
    i = 0
    while rest:
        if i >= len(pieces):
            raise ConjError(f"structured decoding: the prefill {prefill!r} goes past the end of a judgment")
        kind, text = pieces[i]
        if kind == "gap":
            if rest.startswith(" "):
                rest = rest[1:]
            i += 1
        elif kind == "lit" and rest.startswith(text):
            rest = rest[len(text):]
            i += 1
        elif kind == "lit" and text.startswith(rest):
            # The prefill ends inside a literal: its remainder comes next.
            pieces[i] = ("lit", text[len(rest):])
            rest = ""
        else:
            raise ConjError(
                f"structured decoding: the prefill {prefill!r} is not the start of a judgment "
                f'{{"{rationale_key}": "...", "{verdict_key}": 1}} ending before the rationale'
            )
    out = []
    for kind, text in pieces[i:]:
        out.append(_GAP if kind == "gap" else re.escape(text) if kind == "lit" else text)
    return "".join(out)
