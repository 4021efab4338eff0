"""The judge's chat turns, their rendering through the tokenizer's chat template, token lengths.

:func:`chat_messages` is the one builder of judge messages. :func:`render_chat` uses the
tokenizer's own chat template with the user role and the generation prompt in every stage (see
docs/method.md#chat-format; Con-J mixed ``human``/``Assistant:`` wrappings); an
evaluation prefill such as ``' {"原因":'`` is appended after the generation prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conj_train.errors import ConjError


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
    generation prompt (e.g. ``' {"原因":'`` at evaluation).
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConjError(
            f"tokenizer {name!r} has no chat template; judge prompts need one "
            "(use an instruct/chat model or set tokenizer.chat_template)"
        )
    text = tokenizer.apply_chat_template(chat_messages(user_text, system=system), tokenize=False,
                                         add_generation_prompt=True)
    return text + prefill


def prompt_token_lengths(tokenizer: Any, texts: Sequence[str], *, batch_size: int = 512) -> list[int]:
    """Token count of each rendered text, without special tokens on top of the chat template."""
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        lengths.extend(len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"])
    return lengths
