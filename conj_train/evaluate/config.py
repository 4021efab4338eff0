"""The evaluation stage's config: which models and data sets, how they are judged, what is hashed.

Kept apart from :mod:`conj_train.evaluate.run` (the runs) as TRL keeps ``DPOConfig`` apart from its
trainer: a recipe can be checked, and a run's hash computed, without the stage's run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conj_train.config import (
    DTYPES,
    INPUT_OLD_NAMES,
    RUNTIME_FIELDS,
    DecodingOptions,
    EngineOptions,
    JudgeInputOptions,
    PublishOptions,
    ShardedRunOptions,
    select_by_length,
    settings_hash,
)
from conj_train.data.records import INGEST_MODES
from conj_train.errors import ConjError
from conj_train.evaluate.benchmarks import default_split
from conj_train.inference.judge import MODEL_KINDS
from conj_train.runs import parse_shard

ORDERS = ("both", "random")
# Settings that do not change any record: left out of the hash so a rerun can change them and resume.
_RUNTIME_FIELDS = RUNTIME_FIELDS | {
    "model_name_or_path", "output_dir", "reliability_bins", "probability_batch_tokens", "rm_batch_size",
    # Where a server listens and how it is called do not change what it writes; the key's variable
    # name is not the key, which is never in a config.
    "base_url", "api_key_env", "max_concurrency", "request_retries", "request_timeout"}
# Settings added after run folders existed: hashed only away from their defaults, so the folders
# written before them keep their config hash and resume.
_ADDED_FIELDS = {"served_model_name": None, "openai_api": "completions", "structured_output": False}


@dataclass
class EvalConfig(JudgeInputOptions, EngineOptions, DecodingOptions, ShardedRunOptions, PublishOptions):
    """Configuration of the evaluation stage (one or several models, one or several data sets).

    ``report_to`` logs the comparison table once the run is merged; ``push_to_hub`` uploads the
    metrics, summary and every model's judgments with a card (:mod:`conj_train.evaluate.hub`).
    """

    # "path" or "name=path", or a list of them (``conj eval --model [NAME=]PATH``, repeatable).
    model_name_or_path: str | list[str] | None = field(default=None, metadata={
        "help": "The models to evaluate: PATH or NAME=PATH, or a list of them (--model repeatable; required)."})
    dataset_name: str | list[str] | None = field(default=None, metadata={
        "help": "The held-out sets: SOURCE or NAME=SOURCE (file, folder or Hub id), or a list (required)."})
    output_dir: str = field(default="", metadata={"help": "The run folder to write (required; not hashed)."})
    model_kind: str = field(default="auto", metadata={
        "help": "'judge', 'rm' (a scalar reward model) or 'auto' (from the model's config); applies to every model."})
    orders: str = field(default="both", metadata={
        "help": "'both': every pair judged in both answer orders (consistency, position bias); 'random': "
                "one seeded order (Con-J's and RewardBench's protocol)."})
    decoding: str = field(default="greedy", metadata={
        "help": "'greedy' or 'sample' (with temperature, top_p, top_k, repetition_penalty, seed); "
                "repetition_penalty and max_new_tokens apply to both."})
    n: int = field(default=1, metadata={"help": "Judgments per pair and order (> 1 needs decoding: sample)."})
    # Sampling settings (decoding: sample): DecodingOptions. Con-J's released eval script sampled with
    # T 1.0, top-p 0.9 and repetition penalty 1.2 (recipes/con-j-qwen2-7b/eval_paper.yaml); the default
    # here applies no repetition penalty (1.0).
    seed: int = field(default=2021, metadata={
        "help": "decoding sample: run seed (each judgment's seed is a hash of seed, pair id, order, index)."})
    parser: str = field(default="lenient", metadata={
        "help": "Verdict parser: 'lenient' (the original evaluator's), 'strict' (the filter's) or "
                "'rewardbench' (RewardBench's reading)."})
    prefill: str | None = field(default=None, metadata={
        "help": "Forced start of each answer; null: the template's (' {\"原因\":'), '': none."})
    probability: bool = field(default=True, metadata={
        "help": "Read P(slot 1 better) at the verdict digit (one more forward): Brier score, reliability."})
    transfer: bool = field(default=True, metadata={
        "help": "Rationale transfer: feed each rationale back and let the model choose the digit (faithfulness)."})
    transfer_model: str | None = field(default=None, metadata={
        "help": "The model that reads the transferred rationales; null: the judged model itself."})
    # "eval": every row of the benchmark that has a question, two answers and a label is scored (ties,
    # identical or empty answers and repeated pairs included); "train": the training-data cleaning rules.
    ingest_mode: str = field(default="eval", metadata={
        "help": "'eval': every benchmark row with a question, two answers and a label (ties included); "
                "'train': the training-data cleaning rules."})
    # Per data set (by name): {split, format, config} overriding dataset_split / dataset_format /
    # dataset_config; a benchmark's Hub id without a split gets its official one (benchmarks.py).
    dataset_options: dict[str, dict[str, Any]] | None = field(default=None, metadata={
        "help": "Per data set name: {split, format, config} overriding dataset_split, dataset_format, "
                "dataset_config."})
    # Runtime only.
    reliability_bins: int = field(default=10, metadata={
        "help": "Bins of the reliability diagram (>= 1; not hashed)."})
    probability_batch_tokens: int = field(default=16384, metadata={
        "help": "Token budget of one verdict-probability forward (>= 1; memory vs speed, not hashed)."})
    rm_batch_size: int = field(default=8, metadata={
        "help": "Answers a reward model scores per forward (>= 1; not hashed)."})
    # Engine openai (docs/serving.md).
    base_url: str | None = field(default=None, metadata={
        "help": "engine openai: the server's API root, e.g. http://127.0.0.1:8000/v1 (not hashed)"})
    served_model_name: str | None = field(default=None, metadata={
        "help": "engine openai: the model's name on the server (default: the model's path, as `vllm serve "
                "PATH` names it); the path still gives the tokenizer and chat template"})
    openai_api: str = field(default="completions", metadata={
        "help": "engine openai: 'completions' (the rendered prompt + prefill; default) or 'chat' (turns, "
                "the prefill as a continued assistant turn)"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "engine openai: the environment variable holding the API key (the key itself is never "
                "written anywhere)"})
    max_concurrency: int = field(default=8, metadata={"help": "engine openai: requests in flight at once"})
    request_retries: int = field(default=4, metadata={
        "help": "engine openai: retries of a request after a connection error, 408/409/429 or 5xx "
                "(exponential backoff)"})
    request_timeout: float = field(default=600.0, metadata={"help": "engine openai: seconds per request"})
    structured_output: bool = field(default=False, metadata={
        "help": "constrain each judgment to {rationale, verdict} JSON (structured decoding: vLLM's structured "
                "outputs, or llguidance with engine hf; off by default, never when sampling)"})

    def validate(self) -> None:
        """Check values that would otherwise fail deep inside a run."""
        from conj_train.verdicts import MODES

        if not self.output_dir:
            raise ConjError("eval: 'output_dir' is required (--output DIR)")
        self.model_specs()
        self.dataset_specs()
        checks = [
            ("orders", self.orders, ORDERS),
            ("decoding", self.decoding, ("greedy", "sample")),
            ("engine", self.engine, ("hf", "vllm", "openai")),
            ("openai_api", self.openai_api, ("completions", "chat")),
            ("dtype", self.dtype, DTYPES),
            ("parser", self.parser, MODES),
            ("model_kind", self.model_kind, ("auto", *MODEL_KINDS)),
            ("ingest_mode", self.ingest_mode, INGEST_MODES),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ConjError(f"eval: {name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.n < 1 or (self.decoding == "greedy" and self.n != 1):
            raise ConjError(f"eval: n must be >= 1, and 1 with greedy decoding (got {self.n})")
        if self.max_new_tokens < 1 or self.batch_pairs < 1:
            raise ConjError("eval: max_new_tokens and batch_pairs must be >= 1")
        if self.shard is not None:
            parse_shard(self.shard)
        if self.engine == "openai" and not self.base_url:
            raise ConjError("eval: engine openai needs base_url (e.g. --base_url http://127.0.0.1:8000/v1)")
        if self.max_concurrency < 1 or self.request_retries < 0 or not self.request_timeout > 0:
            raise ConjError("eval: max_concurrency >= 1, request_retries >= 0 and request_timeout > 0 are required")
        self._check_dataset_options()
        self.check_publish("eval")

    def _check_dataset_options(self) -> None:
        opts = self.dataset_options or {}
        if not isinstance(opts, dict):
            raise ConjError("eval: dataset_options must map data set names to {split, format, config}")
        names = {n for n, _ in self.dataset_specs()}
        for name, o in opts.items():
            if name not in names:
                raise ConjError(f"eval: dataset_options names {name!r}, which is not a data set "
                                f"({', '.join(sorted(names))})")
            bad = sorted(set(o or {}) - set(_DATASET_OPTION_KEYS)) if isinstance(o, dict) else ["(not a mapping)"]
            if bad:
                raise ConjError(f"eval: dataset_options[{name!r}] has {bad[0]!r}; allowed: "
                                f"{', '.join(_DATASET_OPTION_KEYS)}")

    def load_eval_records(self, name: str, source: str) -> tuple[list[dict], Any, dict[str, Any]]:
        """Records of data set ``name`` to score, its ingest report, and how they were selected.

        The rows are read in ``ingest_mode`` (default: the benchmark's own row set) with this data
        set's split / format / config (``dataset_options``, then the global keys, then the benchmark's
        official split); ``longer`` and ``max_pairs`` then select among them.
        """
        from conj_train.data import load_preferences

        opts = (self.dataset_options or {}).get(name) or {}
        split = opts.get("split", self.dataset_split) or default_split(source)
        res = load_preferences(source, format=opts.get("format", self.dataset_format),
                               config=opts.get("config", self.dataset_config), split=split,
                               field_map=self.field_map, multi_turn=self.multi_turn, mode=self.ingest_mode)
        by_length = select_by_length(res.records, self.longer, self.length_ratio, source=source)
        chosen = by_length[: self.max_pairs] if self.max_pairs else by_length
        selection = {"split": split, "not_selected": {"length": len(res.records) - len(by_length),
                                                      "max_pairs": len(by_length) - len(chosen)}}
        return chosen, res.report, selection

    def model_specs(self) -> list[tuple[str, str]]:
        """``(name, path)`` of every model, in the given order."""
        return _named_specs(self.model_name_or_path, "model")

    def dataset_specs(self) -> list[tuple[str, str]]:
        """``(name, path)`` of every data set, in the given order."""
        return _named_specs(self.dataset_name, "dataset")

    def output_hash(self, model_path: str, kind: str) -> str:
        """Hash of every setting that changes one model's records."""
        return settings_hash(self, exclude=_RUNTIME_FIELDS, old_names={**INPUT_OLD_NAMES, "n": "samples"},
                             added=_ADDED_FIELDS, model_path=model_path, kind=kind)


def _named_specs(value: Any, what: str) -> list[tuple[str, str]]:
    items = [value] if isinstance(value, str) else list(value or [])
    if not items:
        raise ConjError(f"eval: at least one {what} is required (--{what} PATH or NAME=PATH)")
    specs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConjError(f"eval: {what} entries must be non-empty strings, got {item!r}")
        name, sep, path = item.partition("=")
        if not sep:
            path, name = item, _default_name(item)
        if not name or not path or "/" in name or name in (".", ".."):
            raise ConjError(f"eval: bad {what} {item!r}; use PATH or NAME=PATH")
        specs.append((name, path))
    names = [n for n, _ in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConjError(f"eval: two {what}s named {dup[0]!r}; name them NAME=PATH")
    return specs


_DATA_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet", ".csv")
_DATASET_OPTION_KEYS = ("split", "format", "config")


def _default_name(path: str) -> str:
    """The last path component without a data-file extension ("Qwen2.5-7B" keeps its dot)."""
    base = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in _DATA_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base
