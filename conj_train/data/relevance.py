"""Relevance pairs: a question's own answer (chosen) against an answer written for another question.

This is the easiest form of LLMBar's adversarial Neighbor construction, and a cheap "does my pipeline
learn at all?" task for any base model: a small model that cannot learn a data set's real preference
(hh-rlhf harmlessness at 135M parameters, say) can still learn to tell an answer to *this* question from
an answer to another one, so a judge that stays at chance here has a pipeline or training problem.

The construction, from any preference or instruction source ``load_preferences`` reads:

1. One pair per distinct question (its context turns included); the own answer is the record's
   ``chosen`` (for a tie row, its first answer: either is the question's own).
2. Generic answers are left out on both sides (as own answers and as donors), by an explicit rule:
   fewer than ``min_answer_words`` words, or (``drop_shared_answers``) the same text, compared after
   case folding and whitespace collapsing, answers two or more distinct questions ("Can you say
   more?"): such an answer fits any question, so it carries no relevance signal.
3. ``max_chars`` bounds question + context + own answer, so every prompt stays within twice that.
4. Sides: a question is held out when ``sha256(context + question) % 100 < heldout_percent``. Each side
   draws its donors only from itself, so no held-out question ever donates to the training side or
   the other way round, and the split does not depend on file order.
5. The donor: ``random`` (seeded per question, independent of file order) or ``neighbor``, the most
   similar other question of the same side by RapidFuzz's ``token_sort_ratio`` over the question
   texts (a lexical similarity; a maintained C++ library, so all-pairs scoring of a few thousand
   questions takes seconds). A donor never has the same question text or the same answer.

Every input record ends in exactly one place: a training pair, a held-out pair, or one of
``RELEVANCE_SKIPS`` (``RelevanceReport`` keeps that invariant and prints it).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from conj_train.errors import ConjError
from conj_train.ids import id_int, record_id
from conj_train.io import stable_hash

NEGATIVES = ("random", "neighbor")
RELEVANCE_SKIPS: dict[str, str] = {
    "repeated_question": "the question (with its context) already gave a pair: one pair per question",
    "generic_answer": "the own answer is generic (too few words, or the same text answers another question)",
    "too_long": "question + context + own answer is over max_chars",
    "no_donor": "no other question of its side has an answer it can take",
}
SIDES = ("train", "heldout")


@dataclass
class RelevanceOptions:
    """How relevance pairs are built (see the module docstring for each rule)."""

    heldout_percent: int = 30
    negative: str = "random"
    seed: int = 0
    min_answer_words: int = 1
    drop_shared_answers: bool = True
    max_chars: int = 0

    def check(self) -> None:
        """Raise a one-line ConjError for a value outside its range."""
        if not 0 <= self.heldout_percent <= 100:
            raise ConjError(f"heldout_percent must be in 0..100, got {self.heldout_percent}")
        if self.negative not in NEGATIVES:
            raise ConjError(f"negative must be one of {', '.join(NEGATIVES)}, got {self.negative!r}")
        if self.min_answer_words < 0 or self.max_chars < 0:
            raise ConjError("min_answer_words and max_chars must be >= 0")


@dataclass
class RelevanceReport:
    """Where each input record went. Invariant: ``records_in == sum(pairs) + sum(skipped)``."""

    records_in: int = 0
    pairs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIDES, 0))
    skipped: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count ``n`` records as skipped for ``reason`` (a RELEVANCE_SKIPS key)."""
        if reason not in RELEVANCE_SKIPS:
            raise ValueError(f"unknown relevance skip reason {reason!r}")
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    @property
    def accounted(self) -> bool:
        """Whether every input record is a pair or a counted skip."""
        return self.records_in == sum(self.pairs.values()) + sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every count."""
        return {**asdict(self), "accounted": self.accounted}


def _question_key(rec: dict) -> str:
    return stable_hash([rec.get("context") or [], rec["question"]])


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def side_of(rec: dict, heldout_percent: int) -> str:
    """``"heldout"`` when sha256 of the question with its context, mod 100, is under the share."""
    blob = json.dumps([rec.get("context") or [], rec["question"]], ensure_ascii=False, sort_keys=True)
    bucket = id_int(blob, bits=256) % 100
    return "heldout" if bucket < heldout_percent else "train"


def _own_chars(rec: dict) -> int:
    context = sum(len(m["content"]) for m in rec.get("context") or [])
    return len(rec["question"]) + context + len(rec["chosen"])


def _usable(records: Sequence[dict], opts: RelevanceOptions, report: RelevanceReport) -> list[dict]:
    """One record per question, without generic or too long answers (counted in ``report``)."""
    first: dict[str, dict] = {}
    for rec in records:
        key = _question_key(rec)
        if key in first:
            report.skip("repeated_question")
        else:
            first[key] = rec
    askers: dict[str, set[str]] = {}
    for key, rec in first.items():
        askers.setdefault(_normalise(rec["chosen"]), set()).add(key)
    kept = []
    for rec in first.values():
        answer = _normalise(rec["chosen"])
        words = len(answer.split())
        if words < max(1, opts.min_answer_words) or (opts.drop_shared_answers and len(askers[answer]) > 1):
            report.skip("generic_answer")
        elif opts.max_chars and _own_chars(rec) > opts.max_chars:
            report.skip("too_long")
        else:
            kept.append(rec)
    return kept


def _can_donate(rec: dict, donor: dict) -> bool:
    return (_normalise(donor["question"]) != _normalise(rec["question"])
            and _normalise(donor["chosen"]) != _normalise(rec["chosen"]))


def _random_donor(rec: dict, pool: list[dict], seed: int) -> tuple[dict | None, float | None]:
    rng = random.Random(stable_hash([seed, _question_key(rec)]))
    order = list(range(len(pool)))
    rng.shuffle(order)
    return next(((pool[i], None) for i in order if _can_donate(rec, pool[i])), (None, None))


def _neighbour_scores(pool: list[dict]) -> Any:
    """All-pairs lexical similarity (0-100) of the pool's questions."""
    from rapidfuzz import fuzz, process

    texts = [r["question"] for r in pool]
    return process.cdist(texts, texts, scorer=fuzz.token_sort_ratio, processor=str.casefold, workers=1)


def _neighbour_donor(i: int, pool: list[dict], scores: Any) -> tuple[dict | None, float | None]:
    ranked = sorted((j for j in range(len(pool)) if j != i), key=lambda j: (-float(scores[i][j]), j))
    return next(((pool[j], round(float(scores[i][j]), 2)) for j in ranked if _can_donate(pool[i], pool[j])),
                (None, None))


def _pair(rec: dict, donor: dict, side: str, opts: RelevanceOptions, similarity: float | None) -> dict:
    context = rec.get("context") or []
    meta = {**(rec.get("meta") or {}), "relevance": {
        "side": side, "negative": opts.negative, "own_pair": rec["id"], "donor_pair": donor["id"],
        "donor_question": donor["question"][:200], **({"similarity": similarity} if similarity is not None else {}),
    }}
    meta.pop("tie", None)  # the tie was between the source's two answers, not this pair's
    return {"id": record_id(context, rec["question"], rec["chosen"], donor["chosen"]), "context": context,
            "question": rec["question"], "chosen": rec["chosen"], "rejected": donor["chosen"],
            "source": rec.get("source") or "", "meta": meta}


def build_relevance_pairs(records: Sequence[dict], opts: RelevanceOptions) -> tuple[dict[str, list[dict]],
                                                                                      RelevanceReport]:
    """Relevance pairs of canonical ``records``, by side, and the report of where each record went.

    Deterministic for a given ``opts.seed``: sides, donors and the output order depend on the
    questions' content, never on file order (pairs are sorted by question hash).
    """
    opts.check()
    report = RelevanceReport(records_in=len(records), options=asdict(opts))
    usable = sorted(_usable(records, opts, report), key=_question_key)
    out: dict[str, list[dict]] = {side: [] for side in SIDES}
    for side in SIDES:
        pool = [r for r in usable if side_of(r, opts.heldout_percent) == side]
        scores = _neighbour_scores(pool) if opts.negative == "neighbor" and len(pool) > 1 else None
        for i, rec in enumerate(pool):
            donor, similarity = (_neighbour_donor(i, pool, scores) if scores is not None
                                 else _random_donor(rec, pool, opts.seed))
            if donor is None:
                report.skip("no_donor")
                continue
            out[side].append(_pair(rec, donor, side, opts, similarity))
        report.pairs[side] = len(out[side])
    return out, report
