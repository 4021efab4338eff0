"""The parts stage configs share, and what of a stage config a run folder claims (its hash).

A stage's settings are dataclass fields and a recipe is a flat YAML mapping of them
(alignment-handbook style); any of them can be overridden on the command line. A stage config is one
dataclass made of parts, parsed together from the same flat keys, one name per setting:

* mixed-in parts the stage reads setting by setting (:class:`JudgeInputOptions`, :class:`EngineOptions`,
  :class:`ShardedRunOptions`; the warm-up mixes in :class:`PreferenceReadOptions` and
  :class:`JudgePromptOptions`, the parts of :class:`JudgeInputOptions` it shares);
* nested parts a core function takes whole (the filter's ``rules: PairRules`` and
  ``length: LengthRule``): their fields are recipe keys of their own, next to the stage's.

The config system is three modules: this one (the parts, :func:`settings_hash`,
:func:`config_to_dict`), :mod:`conj_train.config.values` (reading and checking values, the settings
as command-line options; no third-party import, so ``conj CMD --help`` stays light) and
:mod:`conj_train.config.parser` (``ConjParser``, transformers' ``HfArgumentParser`` for a stage
config, as TRL's ``TrlParser`` is for training).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conj_train.errors import ConjError

logger = logging.getLogger(__name__)


@dataclass
class ShardedRunOptions:
    """How a run of an engine stage (sampling, evaluation) is split and resumed.

    None of them changes what is generated, so they stay out of a run's config hash: a different batch
    size or shard count resumes the same run.
    """

    batch_pairs: int = 8
    shard: str | None = None
    overwrite: bool = False
    progress: bool = True
    merge_only: bool = False


# The weight dtypes an engine loads (torch's names); checked before a run claims its folder.
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class EngineOptions:
    """The generation engine of the stages that prompt a judge (sampling, evaluation) and its settings."""

    engine: str = "hf"
    dtype: str = "auto"
    trust_remote_code: bool = False
    # hf engine: 0 = one request per forward (a request's texts never depend on the others); above 0,
    # requests are packed up to this many rows x (prompt + new tokens): faster (bench/sample.py), and
    # texts then depend on the pack up to rounding, so it is part of the run's config.
    hf_batch_tokens: int = 0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    threads: int | None = None


@dataclass
class JudgePromptOptions:
    """How a judge prompt is rendered from a pair: the template, a system prompt, the slot-order seed."""

    template: str = "conj-zh"
    system_prompt: str | None = None
    swap_seed: int = 2021


@dataclass
class PreferenceReadOptions:
    """How preference records are read from a source (format, field names, turns) and how many."""

    dataset_format: str | None = None
    field_map: dict[str, str] | None = None
    multi_turn: str = "context"
    max_pairs: int | None = None


@dataclass
class JudgeInputOptions(PreferenceReadOptions, JudgePromptOptions):
    """How the stages that prompt a judge (sampling, evaluation) read pairs and render prompts."""

    dataset_config: str | None = None
    dataset_split: str | None = None
    # Length-bias tests: keep only pairs whose `longer` answer ("chosen" or "rejected") has more than
    # `length_ratio` times the other's characters.
    longer: str | None = None
    length_ratio: float = 2.0

    def load_records(self, source: str) -> tuple[list[dict], Any]:
        """Canonical records of ``source`` (the first ``max_pairs`` used rows) and the ingest report."""
        from conj_train.data import load_preferences

        res = load_preferences(source, format=self.dataset_format, config=self.dataset_config,
                               split=self.dataset_split, field_map=self.field_map, multi_turn=self.multi_turn)
        records = select_by_length(res.records, self.longer, self.length_ratio, source=source)
        records = records[: self.max_pairs] if self.max_pairs else records
        return records, res.report


def select_by_length(records: list[dict], longer: str | None, ratio: float, *, source: str = "data") -> list[dict]:
    """The records whose ``longer`` answer has more than ``ratio`` x the other's characters (all if None)."""
    if longer is None:
        return records
    if longer not in ("chosen", "rejected"):
        raise ConjError(f"longer must be 'chosen' or 'rejected', not {longer!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 1:
        raise ConjError(f"length_ratio must be a number >= 1, got {ratio!r}")
    other = "rejected" if longer == "chosen" else "chosen"
    kept = [r for r in records if len(r[longer]) > ratio * len(r[other])]
    if not kept:
        raise ConjError(f"{source}: no pair has a {longer} answer over {ratio}x longer than the {other} one")
    logger.info("%s: %d of %d pairs have a %s answer over %sx longer", source, len(kept), len(records), longer, ratio)
    return kept


TRACKERS = ("none", "wandb", "all")


@dataclass
class PublishOptions:
    """Where a stage's results go besides its folder: a tracker (wandb) and the Hugging Face Hub.

    None of them changes the stage's output, so they stay out of its config hash (and out of
    ``conj run``'s stage keys): a finished run can be rerun with them to log or push it.
    """

    report_to: str | list[str] = field(
        default="none",
        metadata={"help": "Trackers to log the stage's headline numbers to: 'none' (default, as training's "
                  "report_to), 'wandb' or 'all'. wandb runs offline unless WANDB_API_KEY or WANDB_MODE is set "
                  "(sync later with `wandb sync`); runs are written under output_dir/_wandb, project "
                  "WANDB_PROJECT (default conj-train)."},
    )
    push_to_hub: bool = field(
        default=False,
        metadata={"help": "Upload the stage's result to the Hugging Face Hub as a dataset repo (hub_repo_id) "
                  "with a dataset card. The token is read from the HF_TOKEN environment variable only."},
    )
    hub_repo_id: str | None = field(
        default=None, metadata={"help": "The Hub dataset repo to push to, e.g. 'user/conj-pairs' (created "
                                "if missing). Required with push_to_hub."})
    hub_private: bool | None = field(
        default=None, metadata={"help": "Create the Hub repo private (true) or public (false); null: the "
                                "Hub's default for new repos. An existing repo keeps its visibility."})

    def check_publish(self, stage: str) -> None:
        """Refuse a tracker or push setting that would only fail after the stage's work is done."""
        import os

        targets = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        bad = [t for t in targets if t not in TRACKERS]
        if bad:
            raise ConjError(f"{stage}: report_to must be among {', '.join(TRACKERS)}, not {bad[0]!r}")
        if self.push_to_hub:
            if not self.hub_repo_id or "/" not in self.hub_repo_id:
                raise ConjError(f"{stage}: push_to_hub needs hub_repo_id as 'owner/name', got {self.hub_repo_id!r}")
            if not os.environ.get("HF_TOKEN"):
                raise ConjError(f"{stage}: push_to_hub needs a Hub token in the HF_TOKEN environment variable "
                                "(never in a recipe or file)")


PUBLISH_FIELDS = frozenset(f.name for f in dataclasses.fields(PublishOptions))

# Settings of the engine stages that do not change what is generated (out of their config hash).
RUNTIME_FIELDS = frozenset({f.name for f in dataclasses.fields(ShardedRunOptions)}
                           | {"threads", "gpu_memory_utilization"} | PUBLISH_FIELDS)

# The old names of the input fields in the config hashes of sample and warm-up run folders.
INPUT_OLD_NAMES = {"model_name_or_path": "model", "dataset_name": "dataset"}
def settings_hash(cfg: Any, *, exclude: Iterable[str], old_names: dict[str, str] | None = None,
                  added: dict[str, Any] | None = None, **extra: Any) -> str:
    """Hash of ``cfg``'s settings not in ``exclude`` (plus ``extra``): a run folder's config claim.

    ``old_names`` maps renamed fields to the names they were hashed under before, so a run folder
    written before a rename still resumes under the same settings. ``added`` maps fields added later
    to their defaults: such a field is hashed only when it differs from its default, so folders
    written before it existed keep their hash.
    """
    from conj_train.io import stable_hash

    skip, old, new = set(exclude), old_names or {}, added or {}
    d = {old.get(k, k): v for k, v in config_to_dict(cfg).items()
         if k not in skip and not (k in new and v == new[k])}
    return stable_hash({**d, **extra})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A stage config as one flat dict of its settings, nested parts included (manifests and hashes)."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(cfg).items():
        if dataclasses.is_dataclass(getattr(cfg, key)):
            out.update(value)
        else:
            out[key] = value
    return out
