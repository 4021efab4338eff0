"""Judge and hint prompts, slot order, chat rendering and token lengths (conj-spec sections 2 and 4).

Every prompt the pipeline shows a judge is built here, so sampling, filtering, training and
evaluation all agree on the bytes.

Templates
    ``conj-zh`` (default) is Con-J's judge prompt byte for byte (conj-spec 2.1), the string the
    released model was trained on, used by Con-J for English data too. ``conj-en`` is a faithful
    English translation that asks for ``{"reason": ..., "better_answer": 1|2}``; its layout follows
    the spec's translation (an empty line instead of the original's line of four spaces). A path to
    a UTF-8 text file is a user template with the placeholders ``{question}``, ``{answer1}``,
    ``{answer2}`` and optionally ``{context}``; one trailing newline of the file is dropped (editors
    add it). Its JSON keys, and so its language, are detected from the text: it must mention exactly
    one of the verdict keys ``更好的回答`` / ``better_answer`` so the verdict parser knows what to read.

    Prompts are built by concatenation, or for user files by one regex pass, never with
    ``str.format``: answers contain braces, and a placeholder-like string inside an inserted answer
    must stay literal.

Multi-turn records
    Con-J kept only the first user turn (conj-spec 2.2). Here earlier turns are shown: a transcript
    block with role labels in the template's language (``对话历史：`` / ``Conversation history:``,
    one ``用户：…`` / ``User: …`` line per turn) sits right before the question line, and the
    question is the final user turn. With an empty context nothing is inserted, so the prompt is the
    original byte for byte. User templates receive the same block through ``{context}`` (``''`` when
    empty); a template without ``{context}`` used on a multi-turn record is a ``ConjError`` rather
    than silently dropping the turns.

Slot order
    :func:`chosen_slot` draws the chosen answer's slot (1 or 2) from SHA-256 of ``(seed, pair id)``,
    so a pair keeps its order across runs, shards and dataset edits (Con-J drew it with ``random``
    in row order, which changes when rows move). The slot travels with the prompt as ``label``.

Hint-driven prompts, two readings (conj-spec 4)
    ``paper`` (default): the model is told which answer is better and asked to explain it in the
    same JSON format, which is what the paper describes (conj-spec 4.4); the judge prompt gets the
    sentence ``\\n已知回答{k}更好，请说明原因，并按上述JSON格式输出你的判断。`` (``\\nIt is known that
    answer {k} is better. Please explain why, and output your judgment in the JSON format above.``
    for English). The model writes the JSON itself; nothing is wrapped.
    ``code``: the released script's behaviour. The model sees only the neutral "analyse both"
    prompt (conj-spec 4.1) and never the hint; the verdict is imposed afterwards by
    :func:`wrap_hint_output`, verbatim and without escaping, as the original ``reshape_output`` did.

Chat rendering
    :func:`render_chat` uses the tokenizer's own chat template with the user role and the generation
    prompt in every stage (the recommendation of conj-spec 2.4, instead of Con-J's mixed
    ``human``/``Assistant:`` wrappings); an evaluation prefill such as ``' {"原因":'`` is appended
    after the generation prompt.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from conj_train.errors import ConjError

DEFAULT_TEMPLATE = "conj-zh"
DEFAULT_SEED = 2021
Hint = Literal["correct", "wrong"]
Reading = Literal["paper", "code"]
HINTS: tuple[str, ...] = ("correct", "wrong")
READINGS: tuple[str, ...] = ("paper", "code")


@dataclass(frozen=True)
class Language:
    """The fixed wording of one prompt language: labels, JSON keys, hint sentences."""

    code: str
    rationale_key: str
    verdict_key: str
    question_label: str
    answer1_label: str
    answer2_label: str
    # Neutral "analyse both" instruction of the code reading, up to the question label.
    analyse_intro: str
    # The paper-reading hint sentence is hint_before + str(k) + hint_after.
    hint_before: str
    hint_after: str
    context_header: str
    role_sep: str
    role_labels: Mapping[str, str] = field(default_factory=dict)

    def body(self, question: str, answer1: str, answer2: str, context_block: str) -> str:
        """The question and answer lines, with the transcript block (if any) in front."""
        return (
            context_block
            + self.question_label
            + question
            + self.answer1_label
            + answer1
            + self.answer2_label
            + answer2
        )


# Con-J's strings (conj-spec 2.1 and 4.1): note the line of 4 (judge) and 8 (analyse) spaces, and
# the ASCII ", " after "判断".
CONJ_ZH_JUDGE_INTRO = (
    "作为一个评价专家，给定一个问题和它的两个可能的回答，请选出哪一个回答在连贯性、准确性、覆盖度和上述定义的"
    "整体质量方面最为符合。请用JSON格式输出你的判断, 其中\"原因\"是你提供的解释，\"更好的回答\"是整数类型的1或2，"
    "例如{\"原因\": \"你的解释\", \"更好的回答\": 1}。以下是问题和候选回答的内容：\n    \n"
)
CONJ_ZH_ANALYSE_INTRO = (
    "作为一个评价专家，给定一个问题和它的两个可能的回答，请分析二者在连贯性、准确性、覆盖度和上述定义的"
    "整体质量方面的表现。\n        \n"
)
CONJ_EN_JUDGE_INTRO = (
    "As an evaluation expert, given a question and two possible answers to it, please select which answer "
    "best fits in terms of coherence, accuracy, coverage, and the overall quality defined above. Please "
    "output your judgment in JSON format, where \"reason\" is the explanation you provide and "
    "\"better_answer\" is the integer 1 or 2, for example {\"reason\": \"your explanation\", "
    "\"better_answer\": 1}. Below are the question and the candidate answers:\n\n"
)
CONJ_EN_ANALYSE_INTRO = (
    "As an evaluation expert, given a question and two possible answers to it, please analyse how the two "
    "perform in terms of coherence, accuracy, coverage, and the overall quality defined above.\n\n"
)

ZH = Language(
    code="zh",
    rationale_key="原因",
    verdict_key="更好的回答",
    question_label="问题：",
    answer1_label="\n回答1：",
    answer2_label="\n回答2：",
    analyse_intro=CONJ_ZH_ANALYSE_INTRO,
    hint_before="\n已知回答",
    hint_after="更好，请说明原因，并按上述JSON格式输出你的判断。",
    context_header="对话历史：\n",
    role_sep="：",
    role_labels={"system": "系统", "user": "用户", "assistant": "助手"},
)
EN = Language(
    code="en",
    rationale_key="reason",
    verdict_key="better_answer",
    question_label="Question: ",
    answer1_label="\nAnswer 1: ",
    answer2_label="\nAnswer 2: ",
    analyse_intro=CONJ_EN_ANALYSE_INTRO,
    hint_before="\nIt is known that answer ",
    hint_after=" is better. Please explain why, and output your judgment in the JSON format above.",
    context_header="Conversation history:\n",
    role_sep=": ",
    role_labels={"system": "System", "user": "User", "assistant": "Assistant"},
)
LANGUAGES: dict[str, Language] = {"zh": ZH, "en": EN}

# (question, answer1, answer2, context_block) -> user-message text
JudgeRenderer = Callable[[str, str, str, str], str]


@dataclass(frozen=True)
class JudgeTemplate:
    """A named judge prompt: how to render it, its language and the JSON keys it asks for."""

    name: str
    language: Language
    render: JudgeRenderer
    # Whether the template shows earlier turns; built-ins always do.
    has_context: bool = True

    @property
    def rationale_key(self) -> str:
        """JSON key of the explanation ("原因" / "reason")."""
        return self.language.rationale_key

    @property
    def verdict_key(self) -> str:
        """JSON key of the verdict 1|2 ("更好的回答" / "better_answer")."""
        return self.language.verdict_key

    @property
    def eval_prefill(self) -> str:
        """Assistant prefill used at evaluation, Con-J's ' {"原因":' (conj-spec 2.4)."""
        return ' {"' + self.rationale_key + '":'

    def judge_prompt(
        self,
        question: str,
        answer1: str,
        answer2: str,
        context: Sequence[Mapping[str, Any]] = (),
        *,
        pair_id: str = "",
    ) -> str:
        """The judge prompt (user-message text, before the chat template)."""
        if context and not self.has_context:
            raise ConjError(
                f"template {self.name!r} has no {{context}} placeholder but pair {pair_id!r} has "
                f"{len(context)} earlier turn(s); add {{context}} to the template"
            )
        block = transcript(context, self.language, pair_id=pair_id)
        return self.render(question, answer1, answer2, block)

    def analyse_prompt(
        self,
        question: str,
        answer1: str,
        answer2: str,
        context: Sequence[Mapping[str, Any]] = (),
        *,
        pair_id: str = "",
    ) -> str:
        """The neutral "analyse both answers" prompt of the code reading (conj-spec 4.1)."""
        lang = self.language
        block = transcript(context, lang, pair_id=pair_id)
        return lang.analyse_intro + lang.body(question, answer1, answer2, block)

    def hint_sentence(self, verdict: int) -> str:
        """The paper-reading hint appended to the judge prompt: "answer ``verdict`` is better"."""
        return self.language.hint_before + str(_check_verdict(verdict)) + self.language.hint_after

    def wrap(self, text: str, verdict: int) -> str:
        """Impose ``verdict`` on a code-reading hint output, verbatim as Con-J's reshape_output."""
        return (
            '{"' + self.rationale_key + '":"' + text + '","' + self.verdict_key + '": '
            + str(_check_verdict(verdict)) + "}"
        )


def _builtin(intro: str, lang: Language) -> JudgeRenderer:
    def render(question: str, answer1: str, answer2: str, context_block: str) -> str:
        return intro + lang.body(question, answer1, answer2, context_block)

    return render


BUILTIN_TEMPLATES: dict[str, JudgeTemplate] = {
    "conj-zh": JudgeTemplate("conj-zh", ZH, _builtin(CONJ_ZH_JUDGE_INTRO, ZH)),
    "conj-en": JudgeTemplate("conj-en", EN, _builtin(CONJ_EN_JUDGE_INTRO, EN)),
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REQUIRED = ("question", "answer1", "answer2")
_KNOWN = (*_REQUIRED, "context")


def get_template(name_or_path: str | Path | JudgeTemplate) -> JudgeTemplate:
    """A built-in template by name ("conj-zh", "conj-en") or a user template file by path."""
    if isinstance(name_or_path, JudgeTemplate):
        return name_or_path
    key = str(name_or_path)
    if key in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[key]
    path = Path(key)
    if not path.is_file():
        raise ConjError(
            f"unknown judge template {key!r}: not one of {sorted(BUILTIN_TEMPLATES)} and no such file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConjError(f"cannot read judge template file {key}: {e}") from e
    return template_from_text(text.removesuffix("\n"), name=key)


def template_from_text(text: str, *, name: str) -> JudgeTemplate:
    """A user template from its text; placeholders are validated here, filled in one regex pass."""
    found = [m.group(1) for m in _PLACEHOLDER.finditer(text)]
    unknown = sorted(set(found) - set(_KNOWN))
    if unknown:
        raise ConjError(
            f"judge template {name}: unknown placeholder(s) {['{' + u + '}' for u in unknown]}; "
            f"allowed: {['{' + k + '}' for k in _KNOWN]}"
        )
    missing = [k for k in _REQUIRED if k not in found]
    if missing:
        raise ConjError(f"judge template {name}: missing placeholder(s) {['{' + k + '}' for k in missing]}")
    langs = [lang for lang in LANGUAGES.values() if lang.verdict_key in text]
    if len(langs) != 1:
        keys = [lang.verdict_key for lang in LANGUAGES.values()]
        raise ConjError(
            f"judge template {name}: must ask for exactly one known verdict key {keys} so verdicts "
            f"can be parsed; found {[lang.verdict_key for lang in langs]}"
        )

    def render(question: str, answer1: str, answer2: str, context_block: str) -> str:
        values = {"question": question, "answer1": answer1, "answer2": answer2, "context": context_block}
        # re.sub never rescans inserted text, so "{answer2}" inside an answer stays literal.
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)

    return JudgeTemplate(name, langs[0], render, has_context="context" in found)


def transcript(context: Sequence[Mapping[str, Any]], lang: Language, *, pair_id: str = "") -> str:
    """The earlier turns as a labelled block ending in a newline; ``''`` for no turns."""
    if not context:
        return ""
    lines = []
    for i, turn in enumerate(context):
        role = turn.get("role") if isinstance(turn, Mapping) else None
        content = turn.get("content") if isinstance(turn, Mapping) else None
        if role not in lang.role_labels or not isinstance(content, str):
            where = f"pair {pair_id!r} " if pair_id else ""
            raise ConjError(
                f"{where}context turn {i}: expected {{role: one of {sorted(lang.role_labels)}, "
                f"content: str}}, got {turn!r:.200}"
            )
        lines.append(lang.role_labels[role] + lang.role_sep + content + "\n")
    return lang.context_header + "".join(lines)


def chosen_slot(pair_id: str, seed: int = DEFAULT_SEED) -> int:
    """The slot (1 or 2) of the chosen answer: SHA-256 of (seed, id), independent of row order."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    return 1 + (digest[0] & 1)


def _check_verdict(verdict: int) -> int:
    if verdict not in (1, 2) or isinstance(verdict, bool):
        raise ValueError(f"verdict must be 1 or 2, got {verdict!r}")
    return int(verdict)


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
    label = _check_verdict(item["label"])
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

    The template's keys are used (``reason`` / ``better_answer`` for conj-en); conj-spec 4.2.
    """
    return get_template(template).wrap(text, verdict)


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
