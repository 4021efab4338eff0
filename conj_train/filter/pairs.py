"""Contrastive pair building per pair id, label balancing and train/validation splits
(docs/method.md#pair-construction, #splits); pure functions, no I/O.

The judgments come classified by :mod:`conj_train.filter.rules` (label agreement, the length rule), which
also holds the settings (:class:`~conj_train.filter.rules.PairRules`).

Pair building per pair id (the ``code`` preset)
    1. Repeated samples are split into positives, negatives and unparseables in sample-index order;
       positives and negatives are then shuffled (positives first) with draws seeded by SHA-256 of
       ``f"{seed}:{pair_id}"`` (:class:`conj_train.ids.SeededDraws`), so the result does not depend on file order,
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

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from conj_train.errors import ConjError
from conj_train.filter.rules import HINT_CORRECT, HINT_WRONG, REPEATED, PairRules, SampledJudgment
from conj_train.ids import SeededDraws, id_int
from conj_train.verdicts import NEGATIVE, POSITIVE

# Profile of a pair id's repeated samples; "all_right"/"all_wrong" may include unparseables.
PROFILES = ("mixed", "all_right", "all_wrong", "all_unparseable", "no_repeated")


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
    return "validation" if id_int("split", pair_id, bits=64) / 2**64 < validation_share else "train"
