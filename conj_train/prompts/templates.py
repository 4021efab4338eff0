"""Judge prompt templates: the built-in Con-J strings, user template files and the transcript block.

A template turns (question, answers, earlier turns) into the judge's user-message text; building the
prompts of a data set from it is :mod:`conj_train.prompts.build`, rendering them through a chat template
:mod:`conj_train.prompts.chat`.

Templates
    ``conj-zh`` (default) is Con-J's judge prompt byte for byte (docs/method.md#judge-prompt), the
    string the released model was trained on, used by Con-J for English data too. ``conj-en`` is a faithful
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
    Con-J kept only the first user turn (docs/method.md#multi-turn). Here earlier turns are shown: a
    transcript block with role labels in the template's language (``对话历史：`` / ``Conversation history:``,
    one ``用户：…`` / ``User: …`` line per turn) sits right before the question line, and the
    question is the final user turn. With an empty context nothing is inserted, so the prompt is the
    original byte for byte. User templates receive the same block through ``{context}`` (``''`` when
    empty); a template without ``{context}`` used on a multi-turn record is a ``ConjError`` rather
    than silently dropping the turns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.verdicts import EN_RATIONALE_KEY, EN_VERDICT_KEY, ZH_RATIONALE_KEY, ZH_VERDICT_KEY

DEFAULT_TEMPLATE = "conj-zh"


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


# Con-J's strings (docs/method.md#judge-prompt, #hint-readings): note the line of 4 (judge) and 8
# (analyse) spaces, and the ASCII ", " after "判断".
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
    rationale_key=ZH_RATIONALE_KEY,
    verdict_key=ZH_VERDICT_KEY,
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
    rationale_key=EN_RATIONALE_KEY,
    verdict_key=EN_VERDICT_KEY,
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
        """Assistant prefill used at evaluation, Con-J's ' {"原因":' (docs/method.md#chat-format)."""
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
        """The neutral "analyse both answers" prompt of the code reading (docs/method.md#hint-readings)."""
        lang = self.language
        block = transcript(context, lang, pair_id=pair_id)
        return lang.analyse_intro + lang.body(question, answer1, answer2, block)

    def hint_sentence(self, verdict: int) -> str:
        """The paper-reading hint appended to the judge prompt: "answer ``verdict`` is better"."""
        return self.language.hint_before + str(check_verdict(verdict)) + self.language.hint_after

    def wrap(self, text: str, verdict: int) -> str:
        """Impose ``verdict`` on a code-reading hint output, verbatim as Con-J's reshape_output."""
        return (
            '{"' + self.rationale_key + '":"' + text + '","' + self.verdict_key + '": '
            + str(check_verdict(verdict)) + "}"
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


def check_verdict(verdict: int) -> int:
    """``verdict`` as an int when it is 1 or 2; ValueError otherwise (bools included)."""
    if verdict not in (1, 2) or isinstance(verdict, bool):
        raise ValueError(f"verdict must be 1 or 2, got {verdict!r}")
    return int(verdict)
