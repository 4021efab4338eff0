"""Judge and hint prompts of a data set, and slot order (docs/method.md#judge-prompt, #slot-order).

Every prompt the pipeline shows a judge is built here, from the templates of
:mod:`conj_train.prompts.templates`, so sampling, filtering, training and evaluation all agree on the
bytes; :mod:`conj_train.prompts.chat` renders them through the tokenizer's chat template.

Slot order
    :func:`chosen_slot` draws the chosen answer's slot (1 or 2) from SHA-256 of ``(seed, pair id)``,
    so a pair keeps its order across runs, shards and dataset edits (Con-J drew it with ``random``
    in row order, which changes when rows move). The slot travels with the prompt as ``label``.

Hint-driven prompts, two readings (docs/method.md#hint-readings)
    ``paper`` (default): the model is told which answer is better and asked to explain it in the
    same JSON format, which is what the paper describes; the judge prompt gets the
    sentence ``\\n已知回答{k}更好，请说明原因，并按上述JSON格式输出你的判断。`` (``\\nIt is known that
    answer {k} is better. Please explain why, and output your judgment in the JSON format above.``
    for English). The model writes the JSON itself; nothing is wrapped.
    ``code``: the released script's behaviour. The model sees only the neutral "analyse both"
    prompt and never the hint; the verdict is imposed afterwards by
    :func:`wrap_hint_output`, verbatim and without escaping, as the original ``reshape_output`` did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from conj_train.errors import ConjError
from conj_train.ids import id_slot
from conj_train.prompts.templates import DEFAULT_TEMPLATE, JudgeTemplate, check_verdict, get_template

DEFAULT_SEED = 2021
Hint = Literal["correct", "wrong"]
Reading = Literal["paper", "code"]
HINTS: tuple[str, ...] = ("correct", "wrong")
READINGS: tuple[str, ...] = ("paper", "code")


def chosen_slot(pair_id: str, seed: int = DEFAULT_SEED) -> int:
    """The slot (1 or 2) of the chosen answer: SHA-256 of (seed, id), independent of row order."""
    return id_slot(seed, pair_id)


def _record_fields(rec: Mapping[str, Any], row: int) -> tuple[str, str, str, str, list]:
    pair_id = rec.get("id")
    if not isinstance(pair_id, str) or not pair_id:
        raise ConjError(f"record {row}: field 'id' must be a non-empty string, got {pair_id!r:.100}")
    values = []
    for key in ("question", "chosen", "rejected"):
        value = rec.get(key)
        if not isinstance(value, str):
            raise ConjError(
                f"record {row} (id {pair_id!r}): field {key!r} must be a string, got {value!r:.100}"
            )
        values.append(value)
    context = rec.get("context") or []
    if not isinstance(context, list):
        raise ConjError(f"record {row} (id {pair_id!r}): field 'context' must be a list of turns")
    return pair_id, values[0], values[1], values[2], context


def build_judge_prompts(
    records: Iterable[Mapping[str, Any]],
    *,
    template: str | Path | JudgeTemplate = DEFAULT_TEMPLATE,
    seed: int = DEFAULT_SEED,
    both_orders: bool = False,
) -> list[dict[str, Any]]:
    """Judge-prompt items for canonical preference records, chosen answer in its hashed slot.

    Each item: ``pair_id``, ``label`` (slot of the chosen answer, 1|2), ``swapped`` (label differs
    from :func:`chosen_slot`), ``question``, ``context``, ``answer1``, ``answer2``, ``prompt`` (user
    text before the chat template), ``template`` and ``source``. With ``both_orders`` every pair
    gives two items, its hashed order first, then the other one.
    """
    tpl = get_template(template)
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row, rec in enumerate(records):
        pair_id, question, chosen, rejected, context = _record_fields(rec, row)
        if pair_id in seen:
            raise ConjError(f"record {row}: duplicate pair id {pair_id!r}")
        seen.add(pair_id)
        slot = chosen_slot(pair_id, seed)
        for label in (slot, 3 - slot) if both_orders else (slot,):
            answer1, answer2 = (chosen, rejected) if label == 1 else (rejected, chosen)
            items.append({
                "pair_id": pair_id,
                "label": label,
                "swapped": label != slot,
                "question": question,
                "context": context,
                "answer1": answer1,
                "answer2": answer2,
                "prompt": tpl.judge_prompt(question, answer1, answer2, context, pair_id=pair_id),
                "template": tpl.name,
                "source": rec.get("source", ""),
            })
    return items


def label_balance(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of label 1 and label 2 (position balance of the chosen answer)."""
    n1 = n2 = 0
    for item in items:
        if item["label"] == 1:
            n1 += 1
        elif item["label"] == 2:
            n2 += 1
        else:
            raise ValueError(f"item {item.get('pair_id')!r}: label must be 1 or 2, got {item['label']!r}")
    total = n1 + n2
    return {"label_1": n1, "label_2": n2, "total": total, "share_label_1": n1 / total if total else 0.0}


def build_hint_prompt(
    item: Mapping[str, Any],
    *,
    hint: Hint,
    reading: Reading = "paper",
    template: str | Path | JudgeTemplate | None = None,
) -> dict[str, Any]:
    """A hint-driven prompt for a judge-prompt item (see the module docstring for the readings).

    Returns ``pair_id``, ``label``, ``hint``, ``reading``, ``verdict`` (the hinted slot: ``label``
    for a correct hint, ``3 - label`` for a wrong one), ``prompt``, ``wrap`` (True in the code
    reading: pass the output through :func:`wrap_hint_output` with ``verdict``) and ``template``.
    ``template`` defaults to the item's own.
    """
    if hint not in HINTS:
        raise ConjError(f"unknown hint {hint!r}; expected one of {HINTS}")
    if reading not in READINGS:
        raise ConjError(f"unknown hint reading {reading!r}; expected one of {READINGS}")
    tpl = get_template(template if template is not None else item["template"])
    label = check_verdict(item["label"])
    verdict = label if hint == "correct" else 3 - label
    args = (item["question"], item["answer1"], item["answer2"], item.get("context") or [])
    if reading == "paper":
        prompt = tpl.judge_prompt(*args, pair_id=item["pair_id"]) + tpl.hint_sentence(verdict)
    else:
        prompt = tpl.analyse_prompt(*args, pair_id=item["pair_id"])
    return {
        "pair_id": item["pair_id"],
        "label": label,
        "hint": hint,
        "reading": reading,
        "verdict": verdict,
        "prompt": prompt,
        "wrap": reading == "code",
        "template": tpl.name,
    }


def build_hint_prompts(
    items: Iterable[Mapping[str, Any]],
    *,
    hints: Sequence[Hint] = ("correct", "wrong"),
    reading: Reading = "paper",
    template: str | Path | JudgeTemplate | None = None,
) -> list[dict[str, Any]]:
    """:func:`build_hint_prompt` for every item and hint (template files are read once)."""
    fixed = get_template(template) if template is not None else None
    cache: dict[str, JudgeTemplate] = {}
    out = []
    for item in items:
        item_tpl = fixed
        if item_tpl is None:
            if item["template"] not in cache:
                cache[item["template"]] = get_template(item["template"])
            item_tpl = cache[item["template"]]
        out.extend(build_hint_prompt(item, hint=h, reading=reading, template=item_tpl) for h in hints)
    return out


def wrap_hint_output(
    text: str, verdict: int, *, template: str | Path | JudgeTemplate = DEFAULT_TEMPLATE
) -> str:
    """Code reading: ``'{"原因":"' + text + '","更好的回答": ' + str(verdict) + '}'``, unescaped.

    The template's keys are used (``reason`` / ``better_answer`` for conj-en).
    """
    return get_template(template).wrap(text, verdict)
