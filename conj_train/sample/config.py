"""The sampling stage's config: the data, the judge prompt, both sampling passes, what is hashed.

Kept apart from :mod:`conj_train.sample.run` (the run) as TRL keeps ``DPOConfig`` apart from its trainer:
a recipe can be checked, and a run's hash computed, without the stage's run code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from conj_train.config import (
    DTYPES,
    INPUT_OLD_NAMES,
    RUNTIME_FIELDS,
    EngineOptions,
    JudgeInputOptions,
    PublishOptions,
    ShardedRunOptions,
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


@dataclass
class SampleConfig(JudgeInputOptions, EngineOptions, ShardedRunOptions, PublishOptions):
    """Configuration of the sampling stage; defaults are Con-J's released values.

    ``hint_reading`` (``paper`` / ``code``) says how a hint is given to the judge; it is not the
    filter's ``preset`` (``code`` / ``paper``: which pair-building algorithm), though they share the
    names of the two sources (the paper, the released code) each follows. ``report_to`` logs the parse
    rate by judgment kind once the run is merged; ``push_to_hub`` uploads the judgments with a card
    (:mod:`conj_train.sample.hub`).
    """

    model_name_or_path: str = ""  # the judge that writes the judgments
    dataset_name: str = ""  # the preference source: file, folder or Hub id
    output_dir: str = ""
    # Repeated sampling (docs/method.md#repeated-sampling).
    n: int = 8
    temperature: float = 1.2
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.2
    max_new_tokens: int = 512
    # Hint-driven sampling (docs/method.md#hint-driven-sampling).
    hint_samples: int = 1
    hint_reading: str = "paper"
    hint_when: str = "always"
    hint_temperature: float = 1.0
    hint_top_p: float = 0.9
    # Forced start of every judgment (repeated and ``paper`` hint passes), e.g. '{"reason":'; ``None`` =
    # the template's evaluation prefill (' {"原因":'), "" = none (Con-J). It is stored as part of the
    # judgment text, as the evaluator parses it. Small models need it to write the JSON at all
    # (README, "Small models"). ``code``-reading hint outputs are free text wrapped afterwards: no prefill.
    prefill: str | None = ""
    # Below this share of parseable judgments (overall or in one kind) the run warns loudly.
    min_parseable: float = 0.5
    seed: int = 1688

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
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              repetition_penalty=self.repetition_penalty,
                              max_new_tokens=self.max_new_tokens)

    def hint_params(self) -> SamplingParams:
        """Decoding settings of the hint pass (the released code's defaults: T 1.0, top-p 0.9)."""
        return SamplingParams(temperature=self.hint_temperature, top_p=self.hint_top_p,
                              top_k=self.top_k, repetition_penalty=self.repetition_penalty,
                              max_new_tokens=self.max_new_tokens)

    def output_hash(self) -> str:
        """Hash of every setting that changes what is generated."""
        return settings_hash(self, exclude=_RUNTIME_FIELDS, old_names=INPUT_OLD_NAMES)
