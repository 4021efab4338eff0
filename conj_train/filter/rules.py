"""Contrastive pair rules: label agreement, the length rule and the filter recipe's pair settings
(docs/method.md#pair-construction); pure functions, no I/O.

:class:`PairRules` and :class:`LengthRule` are parsed directly from the filter recipe; the pairs
they lead to are built by :mod:`conj_train.filter.pairs`.

Each judgment is classified against its pair's label with the strict parser
(:func:`conj_train.verdicts.parse_verdict`): ``positive`` (verdict == label), ``negative`` (the other
slot) or ``unparseable``. A judgment whose generation stopped at the token limit and has no verdict
gets the unparseable reason ``truncated``.

Length rule (docs/method.md#length-rule), on hint outputs only
    When a hint output is longer than ``cut_trigger_chars`` characters *and* the whole text is valid JSON
    (reshaped code-reading outputs with raw newlines or quotes are not, so the rule silently skips
    them, as in the original), its rationale is tokenized with the judge's tokenizer. Over
    ``cut_tokens`` tokens, the first ``cut_tokens`` are decoded and cut at the last ``。`` or ``.``;
    the object is re-serialised with ``json.dumps(..., ensure_ascii=False)``. Like the original's
    ``text[:last_period]``, the period itself is dropped unless ``cut_keep_period``. Without any period
    the judgment is forced ``negative`` and its text becomes the decoded first ``forced_negative_tokens``
    tokens of the rationale (raw text, no JSON). The class is otherwise the one parsed from the
    original text. The rationale is read from the sampling template's key only: ``原因`` (Con-J's
    template, as the original, which reads nothing else: an object holding only ``reason`` is left as
    written) or ``reason`` for the English template.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from conj_train.errors import ConjError
from conj_train.tokens import decode_ids, encode_ids, encode_many
from conj_train.verdicts import (
    NEGATIVE,
    POSITIVE,
    UNPARSEABLE,
    ZH_RATIONALE_KEY,
    classify,
    parse_verdict,
    unparseable_reason,
)

PAIR_TYPES = ("best_of_n", "best_of_n_positive2unknown", "preamble", "preamble2unknown")
PRESETS = ("code", "paper")
CATEGORIES = (POSITIVE, NEGATIVE, UNPARSEABLE)
REPEATED, HINT_CORRECT, HINT_WRONG = "repeated", "hint_correct", "hint_wrong"
JUDGMENT_KINDS = (REPEATED, HINT_CORRECT, HINT_WRONG)
# Length-rule outcomes recorded on a judgment (None: the rule did not apply).
CHECKED, CUT, FORCED_NEGATIVE = "checked", "cut", "forced_negative"
_PERIODS = ("。", ".")


@dataclass(frozen=True)
class LengthRule:
    """The 400-token rationale cut on hint outputs (the length rule above); defaults are the original's.

    The field names are the filter recipe's keys (one name per setting, see conj_train.config.parser).
    """

    length_rule: bool = field(default=True, metadata={
        "help": "Apply the length rule to hint outputs (the original does)."})
    cut_tokens: int = field(default=400, metadata={
        "help": "Rationale tokens kept by the cut (>= 1), up to the last period in them."})
    cut_trigger_chars: int = field(default=600, metadata={
        "help": "The rule applies to judgment texts longer than this many characters (>= 1)."})
    forced_negative_tokens: int = field(default=512, metadata={
        "help": "With no period to cut at: the judgment becomes negative, its text the first this many "
                "rationale tokens (>= 1)."})
    cut_keep_period: bool = field(default=False, metadata={
        "help": "Keep the period the cut ends at (the original drops it)."})

    def validate(self) -> None:
        """Raise ConjError for token / character limits below 1."""
        for name in ("cut_tokens", "cut_trigger_chars", "forced_negative_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConjError(f"filter: {name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class PairRules:
    """How pairs are built from one pair id's judgments; defaults are the released code's.

    ``preset`` (``code`` / ``paper``) picks the pair-building algorithm; it is not the sampler's
    ``hint_reading`` (``paper`` / ``code``: how a hint is given), though both name the source they
    follow. ``seed`` also seeds the filter's label balancing.
    """

    preset: str = field(default="code", metadata={
        "help": "Pair-building algorithm: 'code' (the released script's) or 'paper' (hint pairs only for "
                "one-sided prompts, unparseable chosen sides dropped)."})
    max_best_of_n: int = field(default=3, metadata={
        "help": "Best-of-n pairs per prompt (>= 0; the original's 3)."})
    max_pos_unknown: int = field(default=1, metadata={
        "help": "Right-vs-unparseable pairs per prompt (>= 0; the original's 1)."})
    max_hint: int = field(default=1, metadata={"help": "Hint pairs per prompt (>= 0; the original's 1)."})
    pair_types: tuple[str, ...] = field(default=PAIR_TYPES, metadata={
        "help": "Pair types to keep, a list or 'a,b' (default: all of " + ", ".join(PAIR_TYPES) + ")."})
    # Off by default: with them on, the code preset builds 21-38% fewer best-of-n pairs than the
    # released script on the same judgments (issue 14); they stay options.
    dedup_texts: bool = field(default=False, metadata={"help": "Count identical judgment texts once."})
    drop_identical: bool = field(default=False, metadata={
        "help": "Drop pairs whose chosen and rejected texts are equal."})
    allow_unparseable_chosen: bool | None = field(default=None, metadata={
        "help": "Keep pairs whose chosen judgment has no verdict; null: true under preset code (the "
                "original), else false."})
    seed: int = field(default=2021, metadata={"help": "Seed of pair selection and label balancing."})

    @property
    def keeps_unparseable_chosen(self) -> bool:
        """Whether pairs whose chosen judgment has no verdict are kept (see
        :mod:`conj_train.filter.pairs`)."""
        if self.allow_unparseable_chosen is None:
            return self.preset == "code"
        return self.allow_unparseable_chosen

    def validate(self) -> None:
        """Raise ConjError for values the algorithm cannot use."""
        if self.preset not in PRESETS:
            raise ConjError(f"preset must be one of {PRESETS}, not {self.preset!r}")
        for name in ("max_best_of_n", "max_pos_unknown", "max_hint"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConjError(f"{name} must be an integer >= 0, got {value!r}")
        unknown = [t for t in self.pair_types if t not in PAIR_TYPES]
        if unknown:
            raise ConjError(f"unknown pair type(s) {unknown}; expected some of {list(PAIR_TYPES)}")


class SampledJudgment(NamedTuple):
    """One classified judgment of a sampling run; ``text`` is after the length rule, ``reason`` only if
    unparseable. (Not :class:`conj_train.inference.judge.Judgment`, what the judge API returns per prompt.)"""

    judgment_id: str
    kind: str
    index: int
    text: str
    category: str
    verdict: int | None
    reason: str | None = None
    length_rule: str | None = None


# --- classification ----------------------------------------------------------------------------


def apply_length_rule(text: str, tokenizer: Any, rule: LengthRule,
                      rationale_key: str = ZH_RATIONALE_KEY) -> tuple[str, str | None]:
    """Apply the length rule (docs/method.md) to one hint output: (text, outcome).

    ``outcome`` is None when the rule does not apply (short text, not JSON, no string rationale under
    ``rationale_key``), ``"checked"`` when the rationale is within ``cut_tokens``, ``"cut"`` or
    ``"forced_negative"``. ``tokenizer`` needs ``encode(text, add_special_tokens=False)`` and
    ``decode(ids)``; it is used only when the text triggers the rule.
    """
    target = _rule_target(text, rule, rationale_key)
    if target is None:
        return text, None
    _need_tokenizer(tokenizer)
    new_text, outcome = _cut(target, encode_ids(tokenizer, target[0][target[1]]), tokenizer, rule)
    return (text if new_text is None else new_text), outcome


def _rule_target(text: str, rule: LengthRule, rationale_key: str) -> tuple[dict, str] | None:
    """(object, rationale key) when the rule applies to ``text``."""
    if not rule.length_rule or len(text) <= rule.cut_trigger_chars:
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    return (obj, rationale_key) if isinstance(obj.get(rationale_key), str) else None


def _need_tokenizer(tokenizer: Any) -> None:
    if tokenizer is None:
        raise ConjError("the length rule needs a tokenizer (set 'tokenizer' or disable 'length_rule')")


def _cut(target: tuple[dict, str], ids: list[int], tokenizer: Any, rule: LengthRule
         ) -> tuple[str | None, str]:
    """(new text, or None when it stays as written; outcome) for a rationale of token ``ids``."""
    obj, key = target
    if len(ids) <= rule.cut_tokens:
        return None, CHECKED
    head = decode_ids(tokenizer, ids[: rule.cut_tokens])
    period = max(head.rfind(p) for p in _PERIODS)
    if period < 0:
        return decode_ids(tokenizer, ids[: rule.forced_negative_tokens]), FORCED_NEGATIVE
    obj[key] = head[: period + 1] if rule.cut_keep_period else head[:period]
    return json.dumps(obj, ensure_ascii=False), CUT


def classify_judgment(
    record: Mapping[str, Any], label: int, *, tokenizer: Any = None, length_rule: LengthRule | None = None,
    rationale_key: str = ZH_RATIONALE_KEY,
) -> SampledJudgment:
    """Classify one judgment record (stage-1 fields ``judgment_id``, ``kind``, ``index``, ``text``,
    ``finish_reason``) against ``label``; hint outputs go through the length rule first, which reads
    the rationale under ``rationale_key`` (the sampling template's: ``原因`` or ``reason``)."""
    return classify_judgments([(record, label)], tokenizer=tokenizer, length_rule=length_rule,
                              rationale_key=rationale_key)[0]


def classify_judgments(
    items: Sequence[tuple[Mapping[str, Any], int]], *, tokenizer: Any = None,
    length_rule: LengthRule | None = None, rationale_key: str = ZH_RATIONALE_KEY,
) -> list[SampledJudgment]:
    """:func:`classify_judgment` of each (record, label), with the length rule's tokenizer called once
    for all the hint outputs it applies to (see :mod:`conj_train.tokens`)."""
    out: list[SampledJudgment] = []
    targets: list[tuple[int, tuple[dict, str]]] = []
    rule = length_rule or LengthRule(length_rule=False)
    for record, label in items:
        text = record["text"]
        parsed = parse_verdict(text, "strict")
        kind = record["kind"]
        if rule.length_rule and kind != REPEATED:
            target = _rule_target(text, rule, rationale_key)
            if target is not None:
                targets.append((len(out), target))
        out.append(SampledJudgment(record["judgment_id"], kind, int(record["index"]), text,
                            classify(parsed.verdict, label), parsed.verdict,
                            unparseable_reason(parsed, record.get("finish_reason")), None))
    if targets:
        _need_tokenizer(tokenizer)
        all_ids = encode_many(tokenizer, [obj[key] for _, (obj, key) in targets])
        for (i, target), ids in zip(targets, all_ids, strict=True):
            text, outcome = _cut(target, ids, tokenizer, rule)
            j = out[i]
            if text is None:
                out[i] = j._replace(length_rule=outcome)
            elif outcome == FORCED_NEGATIVE:
                out[i] = j._replace(text=text, category=NEGATIVE, reason=None, length_rule=outcome)
            else:
                out[i] = j._replace(text=text, length_rule=outcome)
    return out
