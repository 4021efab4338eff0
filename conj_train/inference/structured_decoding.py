"""Structured decoding of a judgment: the regular expression a constrained judge's output must match.

Opt-in at evaluation and serving (``conj eval --structured_output true``, ``Judge(structured=True)``):
the engine only lets the judge write ``{"原因": "<JSON string>", "更好的回答": 1|2}`` (the template's
keys), so every judgment parses. Never used when sampling training judgments: there an unparseable
judgment is a Con-J negative, and constraining it away would change what the judge learns from.

A regular expression rather than a JSON schema because the judge's answer is pre-filled: the
engine generates the continuation of ``' {"原因":'``, which is not a JSON document of its own, and
vLLM's ``structured_outputs`` (``regex``) constrains exactly the generated text. The expression is
the judgment's token sequence with what the prefill already wrote removed.

Enforced by vLLM's structured outputs (engines ``vllm``, and ``openai`` on a vLLM server) and, for the
``hf`` engine, by :class:`TokenGuide` on llguidance (``pip install 'conj-train[structured]'``): the
grammar library vLLM itself uses as a backend, maintained, and a self-contained wheel without
dependencies (xgrammar, vLLM's other backend, pulls triton on Linux). The hf engine's sampling loop is
its own, so the guide masks its logits step by step: the same regular expression, the same tokens
allowed as vLLM's guidance backend allows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from conj_train.errors import ConjError

INSTALL_HINT = "structured decoding with the hf engine needs llguidance: pip install 'conj-train[structured]'"

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


class TokenGuide:
    """Per-row llguidance matchers that keep a decode loop's tokens inside ``regex``.

    ``tokenizer``: the model's (fast) tokenizer; ``vocab``: the logits' width; ``stop_ids``: the tokens
    that end a row (allowed once the pattern is complete); ``rows``: how many rows are decoded.
    """

    def __init__(self, tokenizer: Any, vocab: int, stop_ids: Sequence[int], regex: str, rows: int) -> None:
        try:
            import llguidance
            import llguidance.hf
        except ImportError:
            raise ConjError(INSTALL_HINT) from None
        info = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=sorted(stop_ids))
        grammar = llguidance.LLMatcher.grammar_from_regex(regex)
        self.matchers = [llguidance.LLMatcher(info, grammar, log_level=0) for _ in range(rows)]
        if self.matchers and self.matchers[0].is_error():
            raise ConjError(f"structured decoding: bad pattern: {self.matchers[0].get_error()}")
        self.vocab = vocab

    def mask(self, logits: Any, rows: Sequence[int]) -> Any:
        """``logits`` (one line per row of ``rows``) with every token the pattern forbids at -inf."""
        import torch

        packed = bytearray(b"".join(self.matchers[row].compute_bitmask() for row in rows))
        bits = torch.frombuffer(packed, dtype=torch.uint8).view(len(rows), -1)
        # Little-endian 32-bit words: bit j of byte k is token 8k + j.
        shifts = torch.arange(8, dtype=torch.uint8)
        allowed = ((bits.unsqueeze(-1) >> shifts) & 1).view(len(rows), -1)[:, : self.vocab].bool()
        return logits.masked_fill(~allowed.to(logits.device), float("-inf"))

    def consume(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Advance each row's matcher by the token it drew."""
        for row, tok in zip(rows, tokens, strict=True):
            matcher = self.matchers[row]
            if not matcher.is_stopped() and not matcher.consume_token(int(tok)):
                raise ConjError(f"structured decoding: token {tok} refused: {matcher.get_error()}")
