"""Ids and the draws keyed by them: the one SHA-256 recipe behind every pair id, shard, seed, slot,
split and shuffle, so that each stays a function of stable ids (never of row order or of a process's
``random`` state) and a change to the recipe is made in one place.

    record_id        a pair's id: a content hash of (context, question, chosen, rejected)
    id_digest        SHA-256 of parts joined by a separator (``"7:pair-3"``), as bytes
    id_int           the digest's leading bits as an integer (shards, seeds, splits, buckets)
    id_slot          1 or 2 from the digest's first bit (slot order, warm-up verdicts)
    SeededDraws      a stream of draws from a key (pair-level shuffles and choices)

The functions that give these values a meaning (``runs.shard_of``, ``runs.derive_seed``,
``prompts.build.chosen_slot``, ``filter.pairs.split_of``...) call these; their outputs are pinned by
tests, so the recipe must not change.
"""

from __future__ import annotations

import hashlib
from typing import Any

from conj_train.io import stable_hash

_DIGEST_BITS = 256


def record_id(context: list[dict], question: str, chosen: str, rejected: str) -> str:
    """Content hash of a pair: independent of row position, so ids survive added/removed rows."""
    return stable_hash([context, question, chosen, rejected])


def id_digest(*parts: Any, sep: str = ":") -> bytes:
    """SHA-256 of ``str(part)`` for each part, joined by ``sep``, UTF-8 encoded."""
    return hashlib.sha256(sep.join(map(str, parts)).encode("utf-8")).digest()


def id_int(*parts: Any, bits: int, sep: str = ":") -> int:
    """The leading ``bits`` bits of :func:`id_digest` as a non-negative integer (``bits`` <= 256)."""
    return int.from_bytes(id_digest(*parts, sep=sep), "big") >> (_DIGEST_BITS - bits)


def id_slot(*parts: Any) -> int:
    """1 or 2 from the first bit of :func:`id_digest` (a fair coin per key)."""
    return 1 + (id_digest(*parts)[0] & 1)


class SeededDraws:
    """Deterministic draws from SHA-256 of a key, extended by hashing the previous block.

    A per-pair ``random.Random`` costs ~13 µs to seed, as much as the rest of a pair's work; short
    shuffles need only a few draws, so a hash stream is used instead.
    """

    def __init__(self, key: str) -> None:
        self._block = id_digest(key)
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
