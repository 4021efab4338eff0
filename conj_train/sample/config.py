"""The sampling stage's config: the data, the judge prompt, both sampling passes, what is hashed.

Kept apart from :mod:`conj_train.sample.run` (the run) as TRL keeps ``DPOConfig`` apart from its trainer:
a recipe can be checked, and a run's hash computed, without the stage's run code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from conj_train.config import (
    DTYPES,
    INPUT_OLD_NAMES,
    RUNTIME_FIELDS,
    EngineOptions,
    JudgeInputOptions,
    PublishOptions,
    ShardedRunOptions,
    decoding_part,
    settings_hash,
)
from conj_train.engines.base import SamplingParams
from conj_train.errors import ConjError
from conj_train.runs import parse_shard


@functools.lru_cache(maxsize=8)
def _template(name: str) -> Any:
    """The judge template, read once per run (a user template file is not re-read per pair)."""
    from conj_train.prompts.templates import get_template

    return get_template(name)


# Fields that do not change what is generated: excluded from the config hash so that, e.g., a
# different batch size or shard count can resume the same run.
_RUNTIME_FIELDS = RUNTIME_FIELDS | {"output_dir", "min_parseable"}


# Con-J's released sampling values (docs/method.md#repeated-sampling): the repeated pass's decoding; the
# hint pass shares its top-k, repetition penalty and token limit and has its own temperature and top-p.
SampleDecoding = decoding_part(
    "SampleDecoding", __name__, "Decoding of the sampled judgments; defaults are Con-J's sampling values.",
    temperature=1.2, top_p=0.95, top_k=50, repetition_penalty=1.2)


@dataclass
class SampleConfig(JudgeInputOptions, EngineOptions, SampleDecoding, ShardedRunOptions, PublishOptions):
    """Configuration of the sampling stage; defaults are Con-J's released values.

    ``hint_reading`` (``paper`` / ``code``) says how a hint is given to the judge; it is not the
    filter's ``preset`` (``code`` / ``paper``: which pair-building algorithm), though they share the
    names of the two sources (the paper, the released code) each follows. ``report_to`` logs the parse
    rate by judgment kind once the run is merged; ``push_to_hub`` uploads the judgments with a card
    (:mod:`conj_train.sample.hub`).
    """

    model_name_or_path: str = field(default="", metadata={
        "help": "The judge that writes the judgments: a model folder or Hub id (required)."})
    dataset_name: str = field(default="", metadata={
        "help": "The preference source: a file, a folder or a Hub data set id (required)."})
    output_dir: str = field(default="", metadata={"help": "The run folder to write (required; not hashed)."})
    # Repeated sampling (docs/method.md#repeated-sampling); its decoding: SampleDecoding.
    n: int = field(default=8, metadata={"help": "Repeated judgments per pair (>= 0; Con-J: 8)."})
    # Hint-driven sampling (docs/method.md#hint-driven-sampling).
    hint_samples: int = field(default=1, metadata={
        "help": "Judgments per pair with each hint, correct and wrong (>= 0; 0: no hint pass)."})
    hint_reading: str = field(default="paper", metadata={
        "help": "How a hint reaches the judge: 'paper' (in the prompt; the model writes the JSON) or "
                "'code' (the released script: a neutral prompt, the verdict wrapped on afterwards)."})
    hint_when: str = field(default="always", metadata={
        "help": "'always' (the released code: every pair) or 'fallback' (the paper: only pairs whose "
                "repeated judgments are one-sided)."})
    hint_temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature of the hint pass (the released code's 1.0; the repeated pass: "
                "temperature)."})
    hint_top_p: float = field(default=0.9, metadata={
        "help": "Top-p of the hint pass (the released code's 0.9; the repeated pass: top_p)."})
    # Forced start of every judgment (repeated and ``paper`` hint passes), e.g. '{"reason":'; ``None`` =
    # the template's evaluation prefill (' {"原因":'), "" = none (Con-J). It is stored as part of the
    # judgment text, as the evaluator parses it. Small models need it to write the JSON at all
    # (README, "Small models"). ``code``-reading hint outputs are free text wrapped afterwards: no prefill.
    prefill: str | None = field(default="", metadata={
        "help": "Forced start of every judgment, kept in its text; '': none (Con-J), null: the template's "
                "(' {\"原因\":'), which small models need to write JSON at all."})
    # Below this share of parseable judgments (overall or in one kind) the run warns loudly.
    min_parseable: float = field(default=0.5, metadata={
        "help": "Warn when the share of parseable judgments (overall or of one kind) is below this, [0, 1]."})
    seed: int = field(default=1688, metadata={
        "help": "Run seed: each sample's seed is a hash of (seed, pair id, kind, index)."})

    def validate(self) -> None:
        """Check values that would otherwise fail deep inside a run."""
        if self.dtype not in DTYPES:  # before the folder is claimed: a typo must not leave a claim
            raise ConjError(f"sample: dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        for name in ("model_name_or_path", "dataset_name", "output_dir"):
            if not getattr(self, name):
                raise ConjError(f"sample: '{name}' is required")
        if self.n < 0 or self.hint_samples < 0:
            raise ConjError("sample: n and hint_samples must be >= 0")
        if self.n == 0 and self.hint_samples == 0:
            raise ConjError("sample: nothing to do (n = 0 and hint_samples = 0)")
        if self.hint_reading not in ("paper", "code"):
            raise ConjError(f"sample: hint_reading must be 'paper' or 'code', not {self.hint_reading!r}")
        if self.hint_when not in ("always", "fallback"):
            raise ConjError(f"sample: hint_when must be 'always' or 'fallback', not {self.hint_when!r}")
        if self.hint_when == "fallback" and self.n == 0:
            raise ConjError("sample: hint_when=fallback needs repeated samples (n > 0)")
        if self.engine not in ("hf", "vllm"):
            raise ConjError(f"sample: engine must be 'hf' or 'vllm', not {self.engine!r}")
        if not 0 <= self.min_parseable <= 1:
            raise ConjError(f"sample: min_parseable must be in [0, 1], not {self.min_parseable}")
        if self.shard is not None:
            parse_shard(self.shard)
        self.check_publish("sample")

    def prefill_text(self) -> str:
        """The text forced at the start of each judgment (``prefill``; None = the template's)."""
        return _template(self.template).eval_prefill if self.prefill is None else self.prefill

    def repeated_params(self) -> SamplingParams:
        """Decoding settings of the repeated pass."""
        return SamplingParams(**self.decoding_settings())

    def hint_params(self) -> SamplingParams:
        """Decoding settings of the hint pass (the released code's defaults: T 1.0, top-p 0.9)."""
        return SamplingParams(**{**self.decoding_settings(), "temperature": self.hint_temperature,
                                 "top_p": self.hint_top_p})

    def output_hash(self) -> str:
        """Hash of every setting that changes what is generated."""
        return settings_hash(self, exclude=_RUNTIME_FIELDS, old_names=INPUT_OLD_NAMES)
