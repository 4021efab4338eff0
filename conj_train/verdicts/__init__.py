"""Verdicts: reading a judge's output (strict / lenient / RewardBench parsers), the verdict keys, and
the score rule (1 right, 0 wrong, 0.5 no verdict).

    parse        the parser's entry (``parse_verdict``), verdict classes, keys, ``score``
    json_stage   the JSON stage: fenced blocks and ``{...}`` objects decoded in place
    fallbacks    the strict quoted-key fallback and the lenient key cascade
    position     where the verdict digit sits in a judgment (for verdict probabilities)
    rewardbench  RewardBench's reading (parser mode ``rewardbench``)

The parser's names are re-exported here (``from conj_train.verdicts import parse_verdict``); the
modules import only the standard library, so this stays light.
"""

from conj_train.verdicts.parse import (
    BAD_VALUE,
    DEFAULT_RATIONALE_KEYS,
    DEFAULT_VERDICT_KEYS,
    EMPTY,
    EN_RATIONALE_KEY,
    EN_VERDICT_KEY,
    LENIENT_CASCADE,
    MODES,
    NEGATIVE,
    POSITIVE,
    TRUNCATED,
    UNPARSEABLE,
    ZH_RATIONALE_KEY,
    ZH_VERDICT_KEY,
    ParsedVerdict,
    as_keys,
    classify,
    dedup_keys,
    parse_verdict,
    score,
    unparseable_reason,
)

__all__ = [
    "BAD_VALUE",
    "DEFAULT_RATIONALE_KEYS",
    "DEFAULT_VERDICT_KEYS",
    "EMPTY",
    "EN_RATIONALE_KEY",
    "EN_VERDICT_KEY",
    "LENIENT_CASCADE",
    "MODES",
    "NEGATIVE",
    "POSITIVE",
    "TRUNCATED",
    "UNPARSEABLE",
    "ZH_RATIONALE_KEY",
    "ZH_VERDICT_KEY",
    "ParsedVerdict",
    "as_keys",
    "classify",
    "dedup_keys",
    "parse_verdict",
    "score",
    "unparseable_reason",
]
