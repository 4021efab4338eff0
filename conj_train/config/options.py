"""The parts stage configs share, and what of a stage config a run folder claims (its hash).

A stage's settings are dataclass fields and a recipe is a flat YAML mapping of them
(alignment-handbook style); any of them can be overridden on the command line. A stage config is one
dataclass made of parts, parsed together from the same flat keys, one name per setting:

* mixed-in parts the stage reads setting by setting (:class:`JudgeInputOptions`, :class:`EngineOptions`,
  :class:`DecodingOptions` or a stage's :func:`decoding_part`, :class:`ShardedRunOptions`; the warm-up
  mixes in :class:`PreferenceReadOptions` and :class:`JudgePromptOptions`, the parts of
  :class:`JudgeInputOptions` it shares);
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

    batch_pairs: int = field(default=8, metadata={
        "help": "Pairs sent to the engine at once (>= 1); also how often finished records are written."})
    shard: str | None = field(default=None, metadata={
        "help": "This process's part as 'i/K' (0-based): it writes only shard i of K; null: one process, "
                "or the launcher's rank/world size."})
    overwrite: bool = field(default=False, metadata={
        "help": "Replace an earlier run of another config or data in output_dir (its shard files only), "
                "instead of refusing."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    merge_only: bool = field(default=False, metadata={
        "help": "Generate nothing: merge the finished shards of a sharded run (after every --shard i/K job)."})


# The weight dtypes an engine loads (torch's names); checked before a run claims its folder.
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class EngineOptions:
    """The generation engine of the stages that prompt a judge (sampling, evaluation) and its settings."""

    engine: str = field(default="hf", metadata={
        "help": "Generation engine: 'hf' (transformers, CPU or GPU) or 'vllm' (GPU); eval also 'openai' "
                "(an OpenAI-compatible server)."})
    dtype: str = field(default="auto", metadata={
        "help": "Weight dtype: auto (the checkpoint's), float32, float16 or bfloat16."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run the model repo's own code (transformers' trust_remote_code); only for repos you trust."})
    # hf engine: 0 = one request per forward (a request's texts never depend on the others); above 0,
    # requests are packed up to this many rows x (prompt + new tokens): faster (bench/sample.py), and
    # texts then depend on the pack up to rounding, so it is part of the run's config.
    hf_batch_tokens: int = field(default=0, metadata={
        "help": "engine hf: token budget of one packed forward, rows x (prompt + new tokens); 0: one "
                "request per forward, so no text depends on another request (hashed)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "engine vllm: GPUs one model is split over."})
    gpu_memory_utilization: float = field(default=0.9, metadata={
        "help": "engine vllm: share of GPU memory (0-1] vLLM may take (not hashed)."})
    max_model_len: int | None = field(default=None, metadata={
        "help": "Context length in tokens (prompt + new tokens); null: the model's. A prompt that does not "
                "fit is skipped and counted."})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads torch uses; null: torch's default (1 per process when several share a CPU). "
                "Not hashed."})


@dataclass
class DecodingOptions:
    """How the judge decodes: temperature, top-p, top-k, repetition penalty, token limit.

    The defaults are evaluation's (Con-J's released eval script's T 1.0 and top-p 0.9, no top-k and no
    repetition penalty); a stage with other defaults takes :func:`decoding_part` of its own, so each
    setting and its help text is declared once.
    """

    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0 when sampling)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus (top-p) probability mass, (0, 1]."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k most likely tokens (>= 0); 0: off."})
    repetition_penalty: float = field(default=1.0, metadata={
        "help": "Repetition penalty (> 0); 1.0: none."})
    max_new_tokens: int = field(default=512, metadata={"help": "Token limit of each judgment (>= 1)."})

    def decoding_settings(self) -> dict[str, Any]:
        """The decoding settings by name (the keywords of ``Judge.from_pretrained`` and ``SamplingParams``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DecodingOptions)}


def decoding_part(name: str, module: str, doc: str, **defaults: Any) -> type[DecodingOptions]:
    """:class:`DecodingOptions` with a stage's own ``defaults``: the same settings and help texts.

    A subclass redeclaring the fields would declare each one again (and drop its help text);
    ``name`` and ``module`` are where the part is assigned, so it pickles like a written class."""
    import typing

    own = {f.name: f for f in dataclasses.fields(DecodingOptions)}
    unknown = sorted(set(defaults) - set(own))
    if unknown:
        raise TypeError(f"{name}: {unknown[0]!r} is not a decoding setting")
    hints = typing.get_type_hints(DecodingOptions)
    fields = [(n, hints[n], field(default=defaults.get(n, f.default), metadata=f.metadata))
              for n, f in own.items()]
    return dataclasses.make_dataclass(name, fields, bases=(DecodingOptions,),
                                      namespace={"__module__": module, "__doc__": doc})


@dataclass
class JudgePromptOptions:
    """How a judge prompt is rendered from a pair: the template, a system prompt, the slot-order seed."""

    template: str = field(default="conj-zh", metadata={
        "help": "Judge template: 'conj-zh' (Con-J's Chinese prompt), 'conj-en', or a template file's path."})
    system_prompt: str | None = field(default=None, metadata={
        "help": "System turn of the judge's chat; null: the chat template's default, '': no system turn."})
    swap_seed: int = field(default=2021, metadata={
        "help": "Seed of each pair's slot order (a hash of seed and pair id; 2021 as the original)."})


@dataclass
class PreferenceReadOptions:
    """How preference records are read from a source (format, field names, turns) and how many."""

    dataset_format: str | None = field(default=None, metadata={
        "help": "Format of the preference source (e.g. hh-rlhf, pandalm, llmbar, trl-standard, fields); "
                "null: detected from its columns."})
    field_map: dict[str, str] | None = field(default=None, metadata={
        "help": "Column names of a user format: {prompt_field, chosen_field, rejected_field[, "
                "context_field, source_field]}."})
    multi_turn: str = field(default="context", metadata={
        "help": "Earlier turns: 'context' (a transcript block in the prompt) or 'first_turn' (the "
                "original: the first user turn only)."})
    max_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs (>= 1); null: all."})


@dataclass
class JudgeInputOptions(PreferenceReadOptions, JudgePromptOptions):
    """How the stages that prompt a judge (sampling, evaluation) read pairs and render prompts."""

    dataset_config: str | None = field(default=None, metadata={"help": "Config name of a Hub data set."})
    dataset_split: str | None = field(default=None, metadata={
        "help": "Split of a Hub data set; null: 'train' (eval: a benchmark's official split)."})
    # Length-bias tests: keep only pairs whose `longer` answer ("chosen" or "rejected") has more than
    # `length_ratio` times the other's characters.
    longer: str | None = field(default=None, metadata={
        "help": "Length-bias test: keep only pairs whose 'chosen' or 'rejected' answer is over length_ratio "
                "x longer (characters); null: all pairs."})
    length_ratio: float = field(default=2.0, metadata={"help": "With longer: the length ratio (>= 1)."})

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
