"""Label-agreement filtering and contrastive pair building (conj-spec 5.1 and 6); pure functions, no I/O.

Each judgment is classified against its pair's label with the strict parser
(:func:`conj_train.verdicts.parse_verdict`): ``positive`` (verdict == label), ``negative`` (the other
slot) or ``unparseable``. A judgment whose generation stopped at the token limit and has no verdict
gets the unparseable reason ``truncated``.

Length rule (conj-spec 6.3), on hint outputs only
    When a hint output is longer than ``cut_trigger_chars`` characters *and* the whole text is valid JSON
    (reshaped code-reading outputs with raw newlines or quotes are not, so the rule silently skips
    them, as in the original), its rationale is tokenized with the judge's tokenizer. Over
    ``cut_tokens`` tokens, the first ``cut_tokens`` are decoded and cut at the last ``。`` or ``.``;
    the object is re-serialised with ``json.dumps(..., ensure_ascii=False)``. Like the original's
    ``text[:last_period]``, the period itself is dropped unless ``cut_keep_period``. Without any period
    the judgment is forced ``negative`` and its text becomes the decoded first ``forced_negative_tokens``
    tokens of the rationale (raw text, no JSON). The class is otherwise the one parsed from the
    original text. The rationale is read from ``原因`` or, for the English template, ``reason``.

Pair building per pair id (conj-spec 6.2, the ``code`` preset)
    1. Repeated samples are split into positives, negatives and unparseables in sample-index order;
       positives and negatives are then shuffled (positives first) with draws seeded by SHA-256 of
       ``f"{seed}:{pair_id}"`` (:class:`SeededDraws`), so the result does not depend on file order,
       sharding or other pairs (the original shuffled with one global ``random.seed(2021)``).
    2. ``best_of_n``: (pos[i], neg[i]) for i < min(#pos, #neg, ``max_best_of_n``); no sample reused.
    3. ``best_of_n_positive2unknown``: (pos[i], unparseable[i]) for i < min(#pos, #unp,
       ``max_pos_unknown``); pos[0] is reused, as in the original.
    4. ``preamble``: a hint_correct positive vs a hint_wrong negative. Otherwise, when the
       hint_correct side has no negative and the hint_wrong side no positive (so at least one side is
       unparseable), ``preamble2unknown``: (hint_correct positive, else its unparseable) vs
       (hint_wrong negative, else its unparseable). In the rare case where the hint_correct output
       is unparseable the *chosen* side has no verdict; the original keeps such pairs, and so does
       the ``code`` preset; every other preset drops them (``allow_unparseable_chosen``, None = by
       preset: a weak judge's unparseable outputs would otherwise train as "right"); both counted.
       With ``hint_samples > 1`` the original's list logic runs on each side's samples in index
       order, so the pair uses the first sample of each side that parses, by the strict rule after
       the length rule, to the wanted class; up to ``max_hint`` pairs, no sample reused. A pair id
       with no hint samples on one side (hints not sampled, or skipped) gets no hint pair.
    The ``paper`` preset uses hint pairs only where repeated sampling is one-sided (no positive or
    no negative, unparseables aside: the same test as the sampler's ``hint_when: fallback``).

Options beyond the original (off by default, so the ``code`` preset is the released algorithm):
``dedup_texts`` keeps the first of identical texts among a pair id's
repeated samples (and within each hint side) before pairing; ``drop_identical`` drops pairs whose
chosen and rejected texts are equal; ``pair_types`` disables pair types after they are decided, so a
disabled ``preamble`` never turns into a ``preamble2unknown``; :func:`balance_by_label` downsamples
the majority label (Self-Taught Evaluator's label balancing: the chosen judgment's verdict equals
its pair's label, so balancing labels balances verdicts).

A pair id that yields no pair gets one ``lost`` reason: ``skipped_at_sampling`` (no judgments at
all), ``types_disabled`` / ``unparseable_chosen`` / ``identical_texts`` (pairs were formed and
all removed by that option), or ``<profile>_<hint status>`` such as ``all_right_no_hint`` or
``all_wrong_hint_failed``, where the profile of the repeated samples is one of :data:`PROFILES` and
the hint status one of ``no_hint``, ``hint_failed``, ``hint_skipped`` (paper preset, repeated mixed).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from conj_train.errors import ConjError
from conj_train.tokens import decode_ids, encode_ids, encode_many
from conj_train.verdicts import (
    DEFAULT_RATIONALE_KEYS,
    NEGATIVE,
    POSITIVE,
    UNPARSEABLE,
    classify,
    parse_verdict,
    unparseable_reason,
)

PAIR_TYPES = ("best_of_n", "best_of_n_positive2unknown", "preamble", "preamble2unknown")
PRESETS = ("code", "paper")
CATEGORIES = (POSITIVE, NEGATIVE, UNPARSEABLE)
REPEATED, HINT_CORRECT, HINT_WRONG = "repeated", "hint_correct", "hint_wrong"
JUDGMENT_KINDS = (REPEATED, HINT_CORRECT, HINT_WRONG)
# Profile of a pair id's repeated samples; "all_right"/"all_wrong" may include unparseables.
PROFILES = ("mixed", "all_right", "all_wrong", "all_unparseable", "no_repeated")
# Length-rule outcomes recorded on a judgment (None: the rule did not apply).
CHECKED, CUT, FORCED_NEGATIVE = "checked", "cut", "forced_negative"
_PERIODS = ("。", ".")


@dataclass(frozen=True)
class LengthRule:
    """The 400-token rationale cut on hint outputs (conj-spec 6.3); defaults are the original's.

    The field names are the filter recipe's keys (one name per setting, see conj_train.config).
    """

    length_rule: bool = True  # the rule is on
    cut_tokens: int = 400
    cut_trigger_chars: int = 600
    forced_negative_tokens: int = 512
    cut_keep_period: bool = False

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

    preset: str = "code"
    max_best_of_n: int = 3
    max_pos_unknown: int = 1
    max_hint: int = 1
    pair_types: tuple[str, ...] = PAIR_TYPES
    # Off by default: with them on, the code preset builds 21-38% fewer best-of-n pairs than the
    # released script on the same judgments (issue 14); they stay options.
    dedup_texts: bool = False
    drop_identical: bool = False
    allow_unparseable_chosen: bool | None = None  # None: True under preset "code" (the original), else False
    seed: int = 2021

    @property
    def keeps_unparseable_chosen(self) -> bool:
        """Whether pairs whose chosen judgment has no verdict are kept (see the module docstring)."""
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
    unparseable. (Not :class:`conj_train.judge.Judgment`, what the judge API returns per prompt.)"""

    judgment_id: str
    kind: str
    index: int
    text: str
    category: str
    verdict: int | None
    reason: str | None = None
    length_rule: str | None = None


class Pair(NamedTuple):
    """One contrastive pair: ``chosen`` agrees with ``label``, ``rejected`` does not (or is unparseable)."""

    pair_id: str
    pair_type: str
    label: int
    chosen: SampledJudgment
    rejected: SampledJudgment


@dataclass
class PairOutcome:
    """What :func:`build_pairs` made of one pair id, with what the report needs to account for it."""

    pair_id: str
    label: int
    pairs: list[Pair]
    profile: str
    hint_status: str
    lost_reason: str | None
    duplicates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


# --- classification ----------------------------------------------------------------------------


def apply_length_rule(text: str, tokenizer: Any, rule: LengthRule) -> tuple[str, str | None]:
    """Apply conj-spec 6.3 to one hint output: (text, outcome).

    ``outcome`` is None when the rule does not apply (short text, not JSON, no string rationale),
    ``"checked"`` when the rationale is within ``cut_tokens``, ``"cut"`` or ``"forced_negative"``.
    ``tokenizer`` needs ``encode(text, add_special_tokens=False)`` and ``decode(ids)``; it is used
    only when the text triggers the rule.
    """
    target = _rule_target(text, rule)
    if target is None:
        return text, None
    _need_tokenizer(tokenizer)
    new_text, outcome = _cut(target, encode_ids(tokenizer, target[0][target[1]]), tokenizer, rule)
    return (text if new_text is None else new_text), outcome


def _rule_target(text: str, rule: LengthRule) -> tuple[dict, str] | None:
    """(object, rationale key) when the rule applies to ``text``."""
    if not rule.length_rule or len(text) <= rule.cut_trigger_chars:
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    key = next((k for k in DEFAULT_RATIONALE_KEYS if isinstance(obj.get(k), str)), None)
    return None if key is None else (obj, key)


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
    record: Mapping[str, Any], label: int, *, tokenizer: Any = None, length_rule: LengthRule | None = None
) -> SampledJudgment:
    """Classify one judgment record (stage-1 fields ``judgment_id``, ``kind``, ``index``, ``text``,
    ``finish_reason``) against ``label``; hint outputs go through the length rule first."""
    return classify_judgments([(record, label)], tokenizer=tokenizer, length_rule=length_rule)[0]


def classify_judgments(
    items: Sequence[tuple[Mapping[str, Any], int]], *, tokenizer: Any = None,
    length_rule: LengthRule | None = None,
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
            target = _rule_target(text, rule)
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


# --- pair building -----------------------------------------------------------------------------


def repeated_profile(n_pos: int, n_neg: int, n_unp: int) -> str:
    """One of :data:`PROFILES` for a pair id's repeated-sample counts."""
    if n_pos and n_neg:
        return "mixed"
    if n_pos:
        return "all_right"
    if n_neg:
        return "all_wrong"
    return "all_unparseable" if n_unp else "no_repeated"


def _dedup(items: list[SampledJudgment]) -> tuple[list[SampledJudgment], int]:
    if len({j.text for j in items}) == len(items):
        return items, 0
    seen: set[str] = set()
    out = []
    for j in items:
        if j.text not in seen:
            seen.add(j.text)
            out.append(j)
    return out, len(items) - len(out)


def _split(items: Iterable[SampledJudgment]) -> tuple[list[SampledJudgment], list[SampledJudgment], list[SampledJudgment]]:
    pos: list[SampledJudgment] = []
    neg: list[SampledJudgment] = []
    unp: list[SampledJudgment] = []
    for j in items:
        (pos if j.category == POSITIVE else neg if j.category == NEGATIVE else unp).append(j)
    return pos, neg, unp


def _hint_pairs(good: list[SampledJudgment], bad: list[SampledJudgment], limit: int) -> tuple[str, list[SampledJudgment],
                                                                                 list[SampledJudgment]]:
    """(pair type, chosen candidates, rejected candidates) of the hint step, or ("", [], [])."""
    g_pos, g_neg, g_unp = _split(good)
    b_pos, b_neg, b_unp = _split(bad)
    if g_pos and b_neg:
        return "preamble", g_pos[:limit], b_neg[:limit]
    if good and bad and not g_neg and not b_pos:
        return "preamble2unknown", (g_pos or g_unp)[:limit], (b_neg or b_unp)[:limit]
    return "", [], []


class SeededDraws:
    """Deterministic draws from SHA-256 of a key, extended by hashing the previous block.

    A per-pair ``random.Random`` costs ~13 µs to seed, as much as the rest of a pair's work; short
    shuffles need only a few draws, so a hash stream is used instead.
    """

    def __init__(self, key: str) -> None:
        self._block = hashlib.sha256(key.encode()).digest()
        self._pos = 0

    def below(self, n: int) -> int:
        """An integer in [0, n) (64-bit draws, so the modulo bias is negligible)."""
        if self._pos + 8 > len(self._block):
            self._block = hashlib.sha256(self._block).digest()
            self._pos = 0
        value = int.from_bytes(self._block[self._pos : self._pos + 8], "big")
        self._pos += 8
        return value % n

    def shuffle(self, items: list) -> None:
        """Fisher-Yates shuffle of ``items`` in place."""
        for i in range(len(items) - 1, 0, -1):
            k = self.below(i + 1)
            items[i], items[k] = items[k], items[i]


def _by_index(j: SampledJudgment) -> int:
    return j.index


def build_pairs(pair_id: str, label: int, judgments: Sequence[SampledJudgment], rules: PairRules) -> PairOutcome:
    """Contrastive pairs of one pair id from its classified judgments (see the module docstring)."""
    sides: dict[str, list[SampledJudgment]] = {REPEATED: [], HINT_CORRECT: [], HINT_WRONG: []}
    for j in judgments:
        side = sides.get(j.kind)
        if side is None:
            raise ConjError(f"pair {pair_id!r}: unknown judgment kind {j.kind!r} in {j.judgment_id!r}")
        side.append(j)
    duplicates = 0
    for kind, items in sides.items():
        if len(items) > 1:
            items.sort(key=_by_index)
            if rules.dedup_texts:
                sides[kind], removed = _dedup(items)
                duplicates += removed

    pos, neg, unp = _split(sides[REPEATED])
    if len(pos) > 1 or len(neg) > 1:  # shuffling fewer than two items draws nothing
        draws = SeededDraws(f"{rules.seed}:{pair_id}")
        draws.shuffle(pos)
        draws.shuffle(neg)
    profile = repeated_profile(len(pos), len(neg), len(unp))

    candidates: list[Pair] = []
    for i in range(min(len(pos), len(neg), rules.max_best_of_n)):
        candidates.append(Pair(pair_id, "best_of_n", label, pos[i], neg[i]))
    for i in range(min(len(pos), len(unp), rules.max_pos_unknown)):
        candidates.append(Pair(pair_id, "best_of_n_positive2unknown", label, pos[i], unp[i]))

    good, bad = sides[HINT_CORRECT], sides[HINT_WRONG]
    if not good and not bad:
        hint_status = "no_hint"
    elif rules.preset == "paper" and profile == "mixed":
        hint_status = "hint_skipped"
    else:
        hint_type, chosen, rejected = _hint_pairs(good, bad, rules.max_hint)
        for c, r in zip(chosen, rejected, strict=False):
            candidates.append(Pair(pair_id, hint_type, label, c, r))
        hint_status = "hint_pair" if hint_type and chosen and rejected else "hint_failed"

    pairs, dropped, lost_reason = _drop(candidates, rules)
    if not judgments:
        lost_reason = "skipped_at_sampling"
    elif not candidates:
        lost_reason = f"{profile}_{hint_status}"
    return PairOutcome(pair_id, label, pairs, profile, hint_status, lost_reason, duplicates, dropped)


def _drop(pairs: list[Pair], rules: PairRules) -> tuple[list[Pair], dict[str, int], str | None]:
    """Apply the type filter, the unparseable-chosen filter and the identical-text filter, in order:
    (kept pairs, drops by filter, the filter that removed the last pair or None)."""
    dropped: dict[str, int] = {}
    lost = None
    for name in ("types_disabled", "unparseable_chosen", "identical_texts"):
        if not pairs:
            break
        if name == "types_disabled":
            kept = [p for p in pairs if p.pair_type in rules.pair_types]
        elif name == "unparseable_chosen":
            kept = pairs if rules.keeps_unparseable_chosen else [p for p in pairs
                                                                 if p.chosen.category == POSITIVE]
        else:
            kept = [p for p in pairs if p.chosen.text != p.rejected.text] if rules.drop_identical else pairs
        if len(kept) < len(pairs):
            dropped[name] = len(pairs) - len(kept)
            lost = name if not kept else None
        pairs = kept
    return pairs, dropped, lost


# --- balancing and splits ----------------------------------------------------------------------


def _pair_key(p: Pair) -> tuple[str, str, str, str]:
    return (p.pair_id, p.pair_type, p.chosen.judgment_id, p.rejected.judgment_id)


def balance_by_label(pairs: Sequence[Pair], seed: int) -> tuple[list[Pair], list[Pair]]:
    """Downsample the majority label so labels 1 and 2 are chosen equally often: (kept, dropped).

    The pairs to keep are drawn with ``random.Random(seed)`` from the majority side in a canonical
    order, so the result does not depend on the order of ``pairs``; kept pairs keep their order.
    """
    ones = [p for p in pairs if p.label == 1]
    twos = [p for p in pairs if p.label == 2]
    if len(ones) + len(twos) != len(pairs):
        raise ConjError("balance_by_label: every pair's label must be 1 or 2")
    if len(ones) == len(twos):
        return list(pairs), []
    major_label, major, n_keep = (1, ones, len(twos)) if len(ones) > len(twos) else (2, twos, len(ones))
    keep = {_pair_key(p) for p in random.Random(seed).sample(sorted(major, key=_pair_key), n_keep)}
    kept = [p for p in pairs if p.label != major_label or _pair_key(p) in keep]
    dropped = [p for p in major if _pair_key(p) not in keep]
    return kept, dropped


def split_of(pair_id: str, validation_share: float) -> str:
    """``"validation"`` or ``"train"`` from a hash of the pair id alone, so a pair's split is stable
    across runs and settings and no pair id can be in both splits."""
    digest = hashlib.sha256(f"split:{pair_id}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_share else "train"
