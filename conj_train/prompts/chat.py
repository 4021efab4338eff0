"""The judge's chat turns, their rendering through the tokenizer's chat template, token lengths.

:func:`chat_messages` is the one builder of judge messages. :func:`render_chat` uses the
tokenizer's own chat template with the user role and the generation prompt in every stage (see
docs/method.md#chat-format; Con-J mixed ``human``/``Assistant:`` wrappings); an
evaluation prefill such as ``' {"原因":'`` is appended after the generation prompt.

Questions, answers and judgments are data, never structure: :func:`plain_text` (and
:func:`plain_messages`) breaks every special-token string of the tokenizer found in them (say
``<|im_end|>``) with an invisible U+2060 WORD JOINER after its first character, so it tokenizes as
ordinary text and cannot close a turn or open a new one. Every place that turns data into tokens goes
through it: :func:`render_chat` (sampling, evaluation, ``Judge``), the DPO and reward-model pairs
(``train/pair_data.py``, ``train/reward.py``) and ``RewardModel``. Text without such a string is
unchanged, byte for byte. Why not the tokenizer's ``split_special_tokens``: the rendered prompt mixes
the template's real control tokens with the data, and TRL tokenizes the training rows itself, so the
data must be made plain before it is rendered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from conj_train.errors import ConjError

WORD_JOINER = "\u2060"


@functools.lru_cache(maxsize=64)
def _special_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    usable = sorted({t for t in tokens if len(t) >= 2}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, usable))) if usable else None


def special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """Every string ``tokenizer`` reads as a special (control) token: its named special tokens and
    every added token marked special (ChatML's ``<|im_start|>``, ``<|im_end|>``, ...)."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens.update(str(t) for t in added.values() if getattr(t, "special", False))
    return tuple(sorted(tokens))


def plain_text(tokenizer: Any, text: str) -> str:
    """``text`` with each of the tokenizer's special-token strings broken by a word joiner after its
    first character, so it tokenizes as text and never as a control token; unchanged otherwise."""
    pattern = _special_pattern(special_token_strings(tokenizer))
    if pattern is None or not text:
        return text
    for _ in range(8):  # a break cannot form a new token, but be safe against pathological vocabularies
        new = pattern.sub(lambda m: m.group(0)[0] + WORD_JOINER + m.group(0)[1:], text)
        if new == text:
            break
        text = new
    return text


def plain_messages(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with every string content made :func:`plain_text` (roles untouched)."""
    return [{**m, "content": plain_text(tokenizer, m["content"])} if isinstance(m.get("content"), str)
            else dict(m) for m in messages]


def chat_messages(user_text: str, *, system: str | None = None) -> list[dict[str, str]]:
    """The judge's conversation: a system turn only when ``system`` is given (``""`` gives an empty
    one, as on Con-J's model card), then ``user_text`` as the user turn.

    The one builder of judge messages: sampling renders them, the DPO prompt and the warm-up prompt
    are them, so training sees exactly the turns the judgments were sampled from."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": user_text})
    return messages


def render_chat(tokenizer: Any, user_text: str, *, system: str | None = None, prefill: str = "") -> str:
    """``user_text`` as one user turn through the tokenizer's chat template, ready for generation.

    A system turn is added only when ``system`` is given (``""`` gives an empty one, as on Con-J's
    model card); otherwise the template's own default applies. ``prefill`` is appended after the
    generation prompt (e.g. ``' {"原因":'`` at evaluation). ``user_text`` is data: its special-token
    strings are made :func:`plain_text`; ``system`` and ``prefill`` are the user's settings.
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConjError(
            f"tokenizer {name!r} has no chat template; judge prompts need one "
            "(use an instruct/chat model or set tokenizer.chat_template)"
        )
    text = tokenizer.apply_chat_template(chat_messages(plain_text(tokenizer, user_text), system=system), tokenize=False,
                                         add_generation_prompt=True)
    return text + prefill


def prompt_token_lengths(tokenizer: Any, texts: Sequence[str], *, batch_size: int = 512) -> list[int]:
    """Token count of each rendered text, without special tokens on top of the chat template."""
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        lengths.extend(len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return lengths
