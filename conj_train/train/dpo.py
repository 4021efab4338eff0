"""Stage 3: contrastive DPO training of the judge with TRL (data, trainer, machine quirks, resume, save).

Objective (conj-spec 7.1): ``L = L_DPO(sigmoid, beta) + alpha * L_SFT``, written in TRL 1.x as
``loss_type: [sigmoid, sft]`` and ``loss_weights: [1.0, alpha]`` (``rpo_alpha`` no longer exists).
TRL sums the per-token log-probabilities of each completion (``ld_alpha`` unset), as Con-J does
(``average_log_prob=False``); the SFT term is TRL's token-mean NLL of the chosen judgments of the
micro-batch. ``tests/test_train.py`` recomputes both terms from the policy's and reference's
log-probs.

The released code's SFT is different: a separate optimizer step every ``1/sft_loss`` steps on the
repeated-sampling positives only, scaled by 0.001. It is not offered here because it cannot be done
cleanly: that extra step shares Adam's state, so its 0.001 factor barely changes the update size
(Adam normalises the gradient scale away); reproducing it needs a second optimizer step inside one
Trainer step, which DeepSpeed's engine (accumulation boundaries, partitioned gradients, the LR
schedule) does not allow; and its masking of hint pairs yields NaN on hint-only micro-batches. The
per-step form is the paper's description, and ``pair_types: [best_of_n]`` reproduces the code's
"repeated-sampling pairs only" ablation for the whole objective.

Data: the filter stage's ``DatasetDict`` (TRL's conversational preference format). Pairs whose
tokenized prompt (+ judgment) exceeds ``max_length`` are removed here, each under one counted reason,
because TRL drops fully truncated prompts silently. Every derived dataset is backed by Arrow files
in ``<output_dir>/_data_cache`` (never in the filter's folder), which ``precompute_ref_log_probs``
needs when several processes share the work.

Machine: without CUDA the run is fp32; under DeepSpeed it uses gloo with ``use_cpu=False`` and skips
DeepSpeed's shared-memory op build (``../shared/docs/cpu-notes.md`` sections 3-4), so CI exercises the
real ZeRO-3 path; DDP uses ``use_cpu=True`` (MULTI_CPU over gloo). With CUDA none of this applies.

Output folder: ``checkpoint-N/`` every ``save_steps`` (the last complete one is resumed
automatically), then the final judge (weights or LoRA adapter, tokenizer with chat template,
generation config), ``README.md`` (model card), ``report.json`` (data counts, metrics),
``manifest.json`` (config, input, versions; written last), ``recipe.yaml`` (the resolved
arguments), ``metrics.jsonl``/``.csv`` and ``training_curves.png``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trl import DPOConfig, ModelConfig, ScriptArguments, TrlParser

from conj_train.data.report import percentiles
from conj_train.errors import ConjError, loading_errors
from conj_train.io import atomic_write_json, atomic_write_text, file_hash, library_versions, read_json
from conj_train.runs import check_output_dir
from conj_train.train.batches import LabelBalancedSampler
from conj_train.train.logging import DPO_PANELS, MetricsRecorder, is_secret, redact, setup_wandb
from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer

logger = logging.getLogger(__name__)

OVERLONG_MODES = ("drop", "truncate")
# Each removed pair is counted under the first of these it meets (in this order).
LENGTH_REASONS = ("prompt_too_long", "chosen_too_long", "rejected_too_long")
CACHE_DIR = "_data_cache"  # "_"-prefixed: Trainer.push_to_hub skips it
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
_LEN_COLUMNS = ("_prompt_len", "_chosen_seq_len", "_rejected_seq_len")


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainScriptArguments(ScriptArguments):
    """Where the judge's pairs come from and how they are prepared (TRL's ScriptArguments + Con-J)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "The filter stage's output folder (holding dataset/ and report.json), or a "
                  "DatasetDict saved with save_to_disk."},
    )
    dataset_test_split: str = field(default="validation", metadata={"help": "Split used for evaluation."})
    pair_types: list[str] | None = field(
        default=None,
        metadata={"help": "Keep only these pair types (e.g. best_of_n: the code's 'repeated sampling only' "
                  "ablation). Default: all."},
    )
    max_train_pairs: int | None = field(
        default=None, metadata={"help": "Use only the first N training pairs (the code's --max_samples)."})
    max_eval_pairs: int | None = field(default=None, metadata={"help": "Use only the first N eval pairs."})
    overlong: str = field(
        default="drop",
        metadata={"help": "Pairs whose prompt+judgment exceeds max_length: 'drop' them (default), or "
                  "'truncate' the judgment's end as the released code does. Pairs whose prompt alone "
                  "fills max_length are always dropped."},
    )
    auto_resume: bool = field(
        default=True,
        metadata={"help": "Resume from the last complete checkpoint-N in output_dir when one exists."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Empty output_dir first when it holds a run of another config or launch."},
    )

    def __post_init__(self) -> None:
        if self.overlong not in OVERLONG_MODES:
            raise ConjError(f"overlong must be one of {', '.join(OVERLONG_MODES)}, not {self.overlong!r}")


@dataclass
class ConjDPOConfig(DPOConfig):
    """TRL's DPOConfig plus ``global_batch_size`` and this machine's adjustments (see module doc)."""

    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "If set, gradient_accumulation_steps = global_batch_size / (per-device batch x "
                  "processes), so changing the GPU count keeps the global batch."},
    )
    prefix_sharing: bool = field(
        default=True,
        metadata={"help": "Compute each judge prompt once for chosen and rejected (exact; falls back to "
                  "TRL's two-row path with a one-line message where the model does not support it)."},
    )

    balanced_batches: bool = field(
        default=False,
        metadata={"help": "Order each epoch so that every two consecutive pairs have one label-1 and one "
                  "label-2 chosen judgment (conj_train/train/batches.py); needs the pairs' label column."},
    )

    def __post_init__(self) -> None:
        if self.balanced_batches and self.train_sampling_strategy == "group_by_length":
            raise ConjError("balanced_batches and train_sampling_strategy=group_by_length exclude each other")
        # Must run before TrainingArguments.__post_init__: it validates bf16 against the hardware and
        # may create the distributed state (DPOConfig reads self.device for pad_to_multiple_of="auto").
        check_train_values(self)
        self.machine_notes = adapt_to_machine(self)
        super().__post_init__()


class _OneLineParser(TrlParser):
    """TrlParser whose errors are one ConjError line, not ~150 lines of usage then the error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConjError(message)


def parse_args(dataclasses: tuple[type, ...], argv: Sequence[str] | None) -> tuple[Any, ...]:
    """Parse ``--config recipe.yaml`` + ``--key value`` overrides with TrlParser; bad input -> ConjError."""
    from conj_train.config import read_yaml

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or not Path(argv[i + 1]).is_file():
            raise ConjError(f"recipe not found: {argv[i + 1] if i + 1 < len(argv) else '(missing path)'}")
        read_yaml(argv[i + 1])  # not UTF-8, not YAML or not a mapping: one clear line
    try:
        parsed = tuple(_OneLineParser(dataclasses).parse_args_and_config(argv))
    except ValueError as e:  # a dataclass's __post_init__ refusing a value
        raise ConjError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from e
    keep_secrets_out(parsed)
    return parsed


def keep_secrets_out(parsed: Sequence[Any]) -> None:
    """Move a token given as an argument (``--hub_token``) out of every saved or logged place.

    The Trainer pickles its arguments into ``training_args.bin`` (final folder and every checkpoint)
    and wandb records ``sys.argv``; so the token goes to ``HF_TOKEN`` (which pushing reads), the
    argument is cleared and the command line is scrubbed.
    """
    for args in parsed:
        token = getattr(args, "hub_token", None)
        if token:
            os.environ["HF_TOKEN"] = token
            args.hub_token = None
    i = 1
    while i < len(sys.argv):
        key, eq, _ = sys.argv[i].partition("=")
        if key.startswith("--") and is_secret(key[2:], "x"):
            if eq:
                sys.argv[i] = f"{key}=<redacted>"
            elif i + 1 < len(sys.argv):
                sys.argv[i + 1] = "<redacted>"
        i += 1


def parse_train_args(argv: Sequence[str] | None = None) -> tuple[TrainScriptArguments, ConjDPOConfig,
                                                                  ModelConfig]:
    """(script, training, model) arguments of a DPO run from a recipe and CLI overrides."""
    return parse_args((TrainScriptArguments, ConjDPOConfig, ModelConfig), argv)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Machine adjustments (shared with the reward model)
# --------------------------------------------------------------------------------------------------


def world_size() -> int:
    """Number of processes of this launch (``WORLD_SIZE`` from accelerate launch / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def skip_deepspeed_shm_build() -> None:
    """Stop DeepSpeed's CPU backend from JIT-compiling its shared-memory op (about a minute, first run).

    Collectives then go through plain gloo. ``import deepspeed.comm.torch as m`` would bind the
    torch package (``deepspeed.comm`` re-exports it), so the module is patched through sys.modules.
    """
    import importlib

    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # type: ignore[attr-defined]


_AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "global_batch_size", "max_length", "max_prompt_length", "max_completion_length")


def check_train_values(args: Any) -> None:
    """Refuse values TRL would accept and misread: a run of 0 steps reported as a saved judge, beta <= 0
    (the DPO loss turned around), a batch of 0."""
    for name in _AT_LEAST_ONE:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConjError(f"{name} must be >= 1, got {value}")
    if args.learning_rate <= 0:
        raise ConjError(f"learning_rate must be > 0, got {args.learning_rate}")
    if getattr(args, "beta", 1.0) <= 0:
        raise ConjError(f"beta must be > 0, got {args.beta}")
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    targets = [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])
    bad = [t for t in targets if t not in ("all", "none") and t not in INTEGRATION_TO_CALLBACK]
    if bad:
        raise ConjError(f"report_to {bad[0]!r} is not one of none, all, {', '.join(INTEGRATION_TO_CALLBACK)}")
    if args.max_steps <= 0 and args.num_train_epochs <= 0:
        raise ConjError(f"num_train_epochs must be > 0 (or max_steps > 0), got num_train_epochs "
                        f"{args.num_train_epochs}, max_steps {args.max_steps}")


def adapt_to_machine(args: Any) -> list[str]:
    """Adjust training arguments to the launch and hardware, before they are validated; returns notes.

    ``global_batch_size`` sets gradient accumulation for the process count. Without CUDA: fp32;
    under DeepSpeed ``use_cpu=False`` + gloo + no shm build (ZeRO on CPU needs all three);
    otherwise ``use_cpu=True``, which with several processes is accelerate's MULTI_CPU DDP over gloo
    (``use_cpu=False`` there would leave each process training alone); and one torch thread per
    process when several share the cores.
    """
    notes: list[str] = []
    world = world_size()
    gbs = getattr(args, "global_batch_size", None)
    if gbs:
        per_step = args.per_device_train_batch_size * world
        if gbs % per_step:
            raise ConjError(f"global_batch_size {gbs} must be a multiple of per_device_train_batch_size x "
                            f"processes = {args.per_device_train_batch_size} x {world} = {per_step}")
        args.gradient_accumulation_steps = gbs // per_step
        notes.append(f"gradient_accumulation_steps={args.gradient_accumulation_steps} "
                     f"(global batch {gbs} over {world} process(es))")
    import torch

    if torch.cuda.is_available():
        return notes
    if args.bf16 is not False or args.fp16:
        # bf16 on CPU is ~3x slower and impossible under DeepSpeed (it needs use_cpu=False).
        args.bf16, args.fp16 = False, False
        notes.append("no CUDA: fp32 instead of bf16")
    deepspeed = bool(args.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    if deepspeed:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        args.use_cpu = False
        args.ddp_backend = args.ddp_backend or "gloo"
        skip_deepspeed_shm_build()
        notes.append("no CUDA: DeepSpeed on CPU (gloo, use_cpu=False, shm op build skipped)")
    else:
        args.use_cpu = True
        if world > 1:
            notes.append("no CUDA: DDP over gloo")
    if world > 1:
        torch.set_num_threads(1)  # processes sharing CPU cores slow each other down with more
    return notes


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass
class SplitCounts:
    """What happened to one split's pairs: ``read = not_selected + over_cap + sum(dropped) + used``."""

    read: int = 0
    not_selected: int = 0  # pair_type outside pair_types
    over_cap: int = 0  # beyond max_train_pairs / max_eval_pairs
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LENGTH_REASONS, 0))
    truncated: int = 0  # kept with the judgment's end cut (overlong="truncate")
    used: int = 0
    tokens: dict[str, int] = field(default_factory=dict)  # sequence-length percentiles of used pairs

    def check(self) -> None:
        """Assert the identity above (a bug, not a user error, if it fails)."""
        total = self.not_selected + self.over_cap + sum(self.dropped.values()) + self.used
        assert total == self.read, f"split counts do not add up: {asdict(self)}"


def resolve_dataset(path: str | None) -> tuple[Path, Path | None]:
    """(DatasetDict folder, filter report or None) for a filter output folder or a saved DatasetDict."""
    if not path:
        raise ConjError("dataset_name is required: the filter stage's output folder")
    p = Path(path)
    if (p / "dataset" / "dataset_dict.json").is_file():
        d = p / "dataset"
    elif (p / "dataset_dict.json").is_file():
        d = p
    else:
        raise ConjError(f"{p}: neither a filter output folder (dataset/dataset_dict.json) nor a DatasetDict "
                        "saved with save_to_disk")
    report = next((r for r in (d.parent / "report.json", d / "report.json") if r.is_file()), None)
    return d, report


@contextmanager
def main_process_first() -> Iterator[None]:
    """Global main process first, then each node's local main, then the rest (cache writes once)."""
    from accelerate import PartialState

    state = PartialState()
    with state.main_process_first(), state.local_main_process_first():
        yield


def _ids(tokenizer: Any, messages: list[dict], **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def pair_lengths(example: dict[str, Any], tokenizer: Any) -> dict[str, int]:
    """Token lengths as TRL computes them: prompt (shared prefix) and prompt+chosen / prompt+rejected."""
    prompt = _ids(tokenizer, example["prompt"], add_generation_prompt=True)
    with_chosen = _ids(tokenizer, example["prompt"] + example["chosen"])
    with_rejected = _ids(tokenizer, example["prompt"] + example["rejected"])
    n_prompt = min(_common_prefix(prompt, with_chosen), _common_prefix(prompt, with_rejected))
    return {"_prompt_len": n_prompt, "_chosen_seq_len": len(with_chosen),
            "_rejected_seq_len": len(with_rejected)}


def length_reason(n_prompt: int, n_chosen: int, n_rejected: int, max_length: int | None,
                  overlong: str) -> tuple[str | None, bool]:
    """(drop reason or None, truncated) for one pair's token lengths."""
    if max_length is None:
        return None, False
    if n_prompt >= max_length:
        return "prompt_too_long", False
    too_long = [r for r, n in (("chosen_too_long", n_chosen), ("rejected_too_long", n_rejected))
                if n > max_length]
    if not too_long:
        return None, False
    return (None, True) if overlong == "truncate" else (too_long[0], False)


def prepare_split(ds: Any, tokenizer: Any, *, name: str, cache_dir: Path, max_length: int | None,
                  overlong: str, pair_types: Sequence[str] | None, cap: int | None,
                  num_proc: int | None = None) -> tuple[Any, SplitCounts]:
    """Select, cap and length-filter one split; returns a file-backed dataset and its counts."""
    from datasets.fingerprint import Hasher

    counts = SplitCounts(read=ds.num_rows)
    if pair_types:
        if "pair_type" not in ds.column_names:
            raise ConjError(f"pair_types is set but the {name} split has no pair_type column")
        wanted = set(pair_types)
        keep = [i for i, t in enumerate(ds["pair_type"]) if t in wanted]
        counts.not_selected = ds.num_rows - len(keep)
        ds = ds.select(keep)
    if cap is not None and ds.num_rows > cap:
        counts.over_cap = ds.num_rows - cap
        ds = ds.select(range(cap))
    if ds.num_rows == 0:
        counts.check()
        return ds, counts
    # The lengths' cache file lives in the run's folder, so every later map (TRL's tokenization, the
    # precomputed reference log-probs) writes there too, and processes share it by name.
    key = Hasher.hash((ds._fingerprint, tokenizer.chat_template, tokenizer.name_or_path, len(tokenizer)))
    cache_dir.mkdir(parents=True, exist_ok=True)
    with main_process_first():
        ds = ds.map(pair_lengths, fn_kwargs={"tokenizer": tokenizer}, desc=f"Measuring {name} pairs",
                    cache_file_name=str(cache_dir / f"{name}-lengths-{key}.arrow"), new_fingerprint=key,
                    num_proc=num_proc)
    lens = ds.select_columns(list(_LEN_COLUMNS)).to_dict()
    keep, seq_lens = [], []
    for i, (p, c, r) in enumerate(zip(*(lens[k] for k in _LEN_COLUMNS), strict=True)):
        reason, truncated = length_reason(p, c, r, max_length, overlong)
        if reason:
            counts.dropped[reason] += 1
            continue
        counts.truncated += truncated
        keep.append(i)
        seq_lens.append(max(c, r))
    if len(keep) < ds.num_rows:
        ds = ds.select(keep)
    counts.used = ds.num_rows
    counts.tokens = percentiles(seq_lens)
    counts.check()
    return ds.remove_columns(list(_LEN_COLUMNS)), counts


def load_pair_splits(script_args: TrainScriptArguments, tokenizer: Any, max_length: int | None,
                     cache_dir: Path, num_proc: int | None = None
                     ) -> tuple[Any, Any | None, dict[str, SplitCounts], dict | None]:
    """(train, eval or None, counts per split, filter report or None) ready for TRL."""
    from datasets import DatasetDict, load_from_disk

    ddir, report_path = resolve_dataset(script_args.dataset_name)
    dd = load_from_disk(str(ddir))
    if not isinstance(dd, DatasetDict):
        raise ConjError(f"{ddir}: expected a DatasetDict (splits {script_args.dataset_train_split!r}, "
                        f"{script_args.dataset_test_split!r}), found a single Dataset")
    if script_args.dataset_train_split not in dd:
        raise ConjError(f"{ddir}: no split {script_args.dataset_train_split!r} (has {', '.join(dd)})")
    for split, ds in dd.items():
        missing = [c for c in PAIR_COLUMNS if c not in ds.column_names]
        if missing:
            raise ConjError(f"{ddir} [{split}]: missing column(s) {', '.join(missing)}; expected TRL's "
                            "preference format (prompt, chosen, rejected)")
    common = {"tokenizer": tokenizer, "cache_dir": cache_dir, "max_length": max_length,
              "overlong": script_args.overlong, "pair_types": script_args.pair_types, "num_proc": num_proc}
    train, counts = prepare_split(dd[script_args.dataset_train_split], name="train",
                                  cap=script_args.max_train_pairs, **common)
    all_counts = {"train": counts}
    if counts.used == 0:
        raise ConjError(f"{ddir}: no training pairs left ({asdict(counts)})")
    eval_ds = None
    if script_args.dataset_test_split in dd and dd[script_args.dataset_test_split].num_rows:
        eval_ds, counts = prepare_split(dd[script_args.dataset_test_split], name="eval",
                                        cap=script_args.max_eval_pairs, **common)
        all_counts["eval"] = counts
        eval_ds = eval_ds if eval_ds.num_rows else None
    report = read_json(report_path) if report_path else None
    return train, eval_ds, all_counts, report


# --------------------------------------------------------------------------------------------------
# Model, trainer
# --------------------------------------------------------------------------------------------------


def check_model_source(name: str, trust_remote_code: bool, revision: str | None = None) -> None:
    """Refuse, before any data is prepared, a model that cannot load: a missing or empty folder, one
    without ``config.json``, or a config that needs remote code without ``trust_remote_code``."""
    from transformers import AutoConfig

    p = Path(name).expanduser()
    if p.exists() or name.startswith((".", "/", "~")):
        if not p.is_dir():
            raise ConjError(f"model folder not found: {name}")
        if not (p / "config.json").is_file():
            raise ConjError(f"{name}: no config.json (not a saved model folder)")
    try:
        AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except loading_errors() as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in str(e):
            first = "its config needs remote code; pass --trust_remote_code true if you trust it"
        raise ConjError(f"cannot load model {name}: {first}") from e


def load_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(name, **kwargs)``; broken weights (truncated, missing) are a ConjError."""
    try:
        return cls.from_pretrained(name, **kwargs)
    except loading_errors() as e:
        raise ConjError(f"cannot load model {name}: {str(e).strip().splitlines()[0]}") from e


def load_tokenizer(model_args: ModelConfig, trust_remote_code: bool = False) -> Any:
    """The base model's tokenizer (with its chat template); pad falls back to eos."""
    from transformers import AutoTokenizer

    if not model_args.model_name_or_path:
        raise ConjError("model_name_or_path is required")
    check_model_source(model_args.model_name_or_path, trust_remote_code, revision=model_args.model_revision)
    try:
        tok = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                            trust_remote_code=trust_remote_code)
    except loading_errors() as e:
        raise ConjError(f"cannot load the tokenizer of {model_args.model_name_or_path}: "
                        f"{str(e).strip().splitlines()[0]}") from e
    if tok.chat_template is None:
        raise ConjError(f"{model_args.model_name_or_path}: the tokenizer has no chat template; the judge "
                        "prompts are conversations")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def model_kwargs(model_args: ModelConfig, training_args: Any) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments: dtype, attention, quantization (QLoRA), cache."""
    import torch
    from trl import get_quantization_config

    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    if not torch.cuda.is_available():
        dtype = torch.float32  # half-precision weights on CPU train slowly and, under DeepSpeed, not at all
    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": dtype,
        "use_cache": not training_args.gradient_checkpointing,
    }
    quant = get_quantization_config(model_args)
    if quant is not None:
        if not torch.cuda.is_available():
            raise ConjError("load_in_4bit / load_in_8bit (QLoRA) need a CUDA GPU and bitsandbytes")
        from accelerate import PartialState

        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` whose save completed (trainer_state.json is last)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    out = Path(output_dir)
    if not out.is_dir():
        return None
    done = []
    for d in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = d.name.rsplit("-", 1)[-1]
        if step.isdigit() and (d / "trainer_state.json").is_file():
            done.append((int(step), d))
    return str(max(done)[1]) if done else None


# Settings that do not change the trained weights: out of a training folder's config hash.
_TRAIN_RUNTIME = frozenset({
    "output_dir", "logging_dir", "logging_steps", "logging_first_step", "logging_strategy", "logging_nan_inf_filter",
    "save_steps", "save_strategy", "save_total_limit", "save_only_model", "save_safetensors", "report_to",
    "run_name", "project", "disable_tqdm", "resume_from_checkpoint", "auto_resume", "overwrite", "push_to_hub",
    "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision", "hub_token",
    "dataloader_num_workers", "dataset_num_proc", "log_level", "log_level_replica", "local_rank",
    "eval_steps", "eval_strategy", "per_device_eval_batch_size", "eval_on_start", "max_eval_pairs",
    # Set from the launch by adapt_to_machine (the launch is compared on its own, see claim_train_dir).
    "use_cpu", "ddp_backend", "gradient_accumulation_steps", "bf16", "fp16", "deepspeed",
})
RUN_CLAIM = "run.json"


def _launch_info(training_args: Any) -> dict[str, Any]:
    deepspeed = bool(training_args.deepspeed) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    return {"world_size": world_size(), "deepspeed": deepspeed}


def claim_train_dir(script_args: Any, training_args: Any, model_args: Any) -> None:
    """Make ``output_dir`` carry this run's config hash and launch before its first checkpoint.

    A folder of another config (or checkpoints with no claim) is refused unless ``overwrite``, which
    empties it: resuming would mix two configs. A checkpoint saved under another launch that cannot
    load it (DeepSpeed on one side only, or ZeRO over another process count) stops with what to do.
    Every process checks; the main process, first, writes or clears.
    """
    import shutil

    from accelerate import PartialState

    from conj_train.io import stable_hash

    out = Path(training_args.output_dir)
    config = {k: v for k, v in _args_dict(script_args, training_args, model_args).items()
              if k not in _TRAIN_RUNTIME and not k.startswith("_")}
    claim = {"config_hash": stable_hash(config), "launch": _launch_info(training_args)}
    main = PartialState().is_main_process
    with main_process_first():
        old = read_json(out / RUN_CLAIM) if (out / RUN_CLAIM).is_file() else None
        has_run = last_checkpoint(out) is not None or (out / "manifest.json").is_file()
        stale = (old is not None and old.get("config_hash") != claim["config_hash"]) or (old is None and has_run)
        if stale and not script_args.overwrite:
            why = "a different config" if old is not None else "checkpoints without a run.json claim"
            raise ConjError(f"{out} holds a training run with {why}; pass --overwrite true to start over "
                            "or choose a new output_dir")
        if stale and main:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif old is not None and _launch_clash(old.get("launch", {}), claim["launch"]):
            ckpt = last_checkpoint(out)
            if ckpt is not None and script_args.auto_resume and not training_args.resume_from_checkpoint:
                raise ConjError(f"{ckpt} was saved by a launch with {_launch_text(old['launch'])}; this one "
                                f"has {_launch_text(claim['launch'])} and cannot load it. Resume with the "
                                "first launch, or pass --overwrite true to start over")
        if main and (stale or old is None or old != claim):
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / RUN_CLAIM, claim)


def _launch_clash(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether a checkpoint saved under launch ``a`` cannot be resumed under ``b``."""
    if bool(a.get("deepspeed")) != bool(b.get("deepspeed")):
        return True
    return bool(b.get("deepspeed")) and a.get("world_size") != b.get("world_size")


def _launch_text(launch: dict[str, Any]) -> str:
    return f"{'DeepSpeed' if launch.get('deepspeed') else 'no DeepSpeed'}, {launch.get('world_size')} process(es)"


def resume_point(script_args: Any, training_args: Any) -> str | bool | None:
    """What to pass as ``trainer.train(resume_from_checkpoint=...)``."""
    explicit = training_args.resume_from_checkpoint
    if explicit not in (None, ""):
        if str(explicit).lower() in ("true", "last"):
            found = last_checkpoint(training_args.output_dir)
            if found is None:
                raise ConjError(f"resume_from_checkpoint={explicit}: no checkpoint in "
                                f"{training_args.output_dir}")
            return found
        if str(explicit).lower() in ("false", "no", "none"):
            return None
        if not Path(explicit).is_dir():
            raise ConjError(f"resume_from_checkpoint: {explicit} is not a folder")
        return str(explicit)
    return last_checkpoint(training_args.output_dir) if script_args.auto_resume else None


class ConjCardMixin:
    """Trainer mixin: the model card (also written with checkpoints and on push) is conj-train's."""

    card: dict[str, Any] | None = None
    panels: tuple[tuple[str, str, str], ...] = DPO_PANELS

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """Write the card to ``output_dir/README.md`` (main process only)."""
        if not self.is_world_process_zero() or self.card is None:  # type: ignore[attr-defined]
            return
        card = dict(self.card, step=self.state.global_step)  # type: ignore[attr-defined]
        out = Path(self.args.output_dir)  # type: ignore[attr-defined]
        atomic_write_text(out / "README.md", model_card(card))


class ConjDPOTrainer(ConjCardMixin, PrefixSharedDPOTrainer):
    """TRL's DPOTrainer with prefix-shared log-probs (``prefix_sharing``), label-balanced batches
    (``balanced_batches``) and conj-train's model card.

    ``pair_labels`` are the training rows' labels, taken before TRL's tokenization drops the column.
    """

    def __init__(self, *args: Any, pair_labels: Sequence[int] | None = None, **kwargs: Any) -> None:
        self.pair_labels = None if pair_labels is None else list(pair_labels)
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if not getattr(self.args, "balanced_batches", False):
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.pair_labels is None or len(self.pair_labels) != len(dataset):
            raise ConjError("balanced_batches needs one label per training pair (the filter's `label` column)")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LabelBalancedSampler(self.pair_labels, seed)


def build_trainer(script_args: TrainScriptArguments, training_args: ConjDPOConfig, model_args: ModelConfig,
                  *, callbacks: Sequence[Any] = (), trainer_cls: type | None = None
                  ) -> tuple[ConjDPOTrainer, dict[str, SplitCounts], dict | None]:
    """Tokenizer, prepared pairs, policy (+ frozen reference, or LoRA) and the TRL trainer.

    ``trainer_cls`` replaces :class:`ConjDPOTrainer` (a DPOTrainer subclass with
    :class:`ConjCardMixin` first, e.g. one combining the mixin with a prefix-sharing trainer).
    """
    from transformers import AutoModelForCausalLM
    from trl import get_peft_config

    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    out = Path(training_args.output_dir)
    train, eval_ds, counts, filter_report = load_pair_splits(script_args, tokenizer, training_args.max_length,
                                                             out / CACHE_DIR, training_args.dataset_num_proc)
    if eval_ds is None and training_args.eval_strategy != "no":
        logger.warning("no validation pairs: evaluation is turned off")
        training_args.eval_strategy = "no"
    model = load_pretrained(AutoModelForCausalLM, model_args.model_name_or_path,
                            **model_kwargs(model_args, training_args))
    # ref_model=None: TRL loads a frozen copy of the base (or, with precompute_ref_log_probs, scores
    # the pairs once up front); with a LoRA config the adapter-disabled base is the reference.
    extra: dict[str, Any] = {}
    if getattr(training_args, "balanced_batches", False):
        if "label" not in train.column_names:
            raise ConjError(f"balanced_batches: the training pairs in {script_args.dataset_name} have no "
                            "`label` column")
        extra["pair_labels"] = train["label"]
    trainer = (trainer_cls or ConjDPOTrainer)(
        **extra, model=model, ref_model=None, args=training_args, train_dataset=train, eval_dataset=eval_ds,
        processing_class=tokenizer, peft_config=get_peft_config(model_args),
        callbacks=[MetricsRecorder(out, DPO_PANELS), *callbacks],
    )
    return trainer, counts, filter_report


# --------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a training run produced."""

    output_dir: Path
    metrics: dict[str, float]
    counts: dict[str, SplitCounts]
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)
    kind: str = "judge"  # or "reward"

    @property
    def summary(self) -> str:
        """One human line per split and the final metrics."""
        what = "judge" if self.kind == "judge" else "reward model"
        lines = [f"{what} saved to {self.output_dir}" + (f" (resumed from {self.resumed_from})"
                                                         if self.resumed_from else "")]
        for split, c in self.counts.items():
            dropped = ", ".join(f"{k} {v}" for k, v in c.dropped.items() if v) or "none"
            lines.append(f"  {split}: {c.used} of {c.read} pairs used (dropped: {dropped}; "
                         f"truncated {c.truncated})")
        keys = ("train_loss", "eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_accuracy",
                "eval_margin")
        shown = {k: round(self.metrics[k], 4) for k in keys if k in self.metrics}
        if shown:
            lines.append(f"  metrics: {shown}")
        return "\n".join(lines)


def _args_dict(*args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in args:
        d = a.to_dict() if hasattr(a, "to_dict") else asdict(a)
        out.update({k: v for k, v in d.items() if _plain(v)})
    return redact(out)


def _plain(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return v is None or isinstance(v, (str, int, float, bool))


def _last_logged(history: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in history:
        out.update({k: row[k] for k in keys if isinstance(row.get(k), (int, float))})
    return out


def _input_info(script_args: Any, report_path: Path | None) -> dict[str, Any]:
    info: dict[str, Any] = {"dataset": str(script_args.dataset_name)}
    if report_path is not None:
        info["filter_report_hash"] = file_hash(report_path)
        manifest = report_path.parent / "manifest.json"
        if manifest.is_file():
            info["filter_manifest_hash"] = file_hash(manifest)
    return info


def run_train(script_args: TrainScriptArguments, training_args: ConjDPOConfig, model_args: ModelConfig,
              *, callbacks: Sequence[Any] = (), trainer_cls: type | None = None) -> TrainResult:
    """Train the judge, evaluate it, save it with its card and reports; returns the result.

    Run the same call in every process of an ``accelerate launch``; only the main process writes
    reports. ``callbacks`` are extra ``transformers.TrainerCallback`` objects (tests use one to stop);
    ``trainer_cls`` as in :func:`build_trainer`.
    """
    check_output_dir(training_args.output_dir)
    start = begin_run(training_args)
    claim_train_dir(script_args, training_args, model_args)
    resume = resume_point(script_args, training_args)
    trainer, counts, filter_report = build_trainer(script_args, training_args, model_args,
                                                   callbacks=callbacks, trainer_cls=trainer_cls)
    _, report_path = resolve_dataset(script_args.dataset_name)
    return finish_run(trainer, "judge", (script_args, training_args, model_args), counts=counts,
                      filter_report=filter_report, input_info=_input_info(script_args, report_path),
                      resume=resume, start=start)


def begin_run(training_args: Any) -> dict[str, Any]:
    """Logging, seed and wandb set-up shared by both trainers; returns what finish_run reports."""
    from transformers import set_seed

    _setup_logging(training_args)
    set_seed(training_args.seed)
    wandb_mode = setup_wandb(training_args.report_to, Path(training_args.output_dir) / "_wandb")
    return {"t0": time.time(), "wandb": wandb_mode}


def finish_run(trainer: Any, kind: str, all_args: tuple[Any, Any, Any], *, counts: dict[str, SplitCounts],
               filter_report: dict | None, input_info: dict[str, Any], resume: str | bool | None,
               start: dict[str, Any]) -> TrainResult:
    """Train (resuming if asked), evaluate, save the model and write card, report and manifest."""
    _, training_args, model_args = all_args
    config = _args_dict(*all_args)
    trainer.card = card_info(kind, model_args, training_args, config, counts, filter_report, {})
    if trainer.is_world_process_zero():
        logger.info("data: %s", {s: asdict(c) for s, c in counts.items()})
    train_result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(train_result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    metrics.update(_last_logged(trainer.state.log_history, [p[1] for p in trainer.panels]))
    trainer.card = card_info(kind, model_args, training_args, config, counts, filter_report, metrics)
    out = Path(training_args.output_dir)
    trainer.save_model(str(out))  # every process: ZeRO-3 gathers the shards
    notes = list(getattr(training_args, "machine_notes", []))
    if trainer.is_world_process_zero():
        _save_generation_config(trainer, out)
        report = {"stage": "train" if kind == "judge" else "train-rm", "objective": trainer.card["objective"],
                  "data": {s: asdict(c) for s, c in counts.items()},
                  "filter_report": _filter_summary(filter_report), "metrics": metrics,
                  "resumed_from": resume, "world_size": training_args.world_size,
                  "distributed_type": str(training_args.distributed_state.distributed_type).split(".")[-1],
                  "machine_notes": notes, "wandb": start["wandb"],
                  "seconds": round(time.time() - start["t0"], 1)}
        atomic_write_json(out / "report.json", report)
        _write_recipe(out, config)
        trainer.create_model_card()
        atomic_write_json(out / "manifest.json", {
            "stage": report["stage"], "config": config, "input": input_info,
            "counts": {s: c.used for s, c in counts.items()}, "versions": library_versions(),
            "complete": True})
    if training_args.push_to_hub:
        trainer.push_to_hub()
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out, metrics, counts, resume if isinstance(resume, str) else None, notes, kind)


def _setup_logging(training_args: Any) -> None:
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def _save_generation_config(trainer: Any, out: Path) -> None:
    """Generation config next to a LoRA adapter too (save_model writes it only for full models)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    gen = getattr(model, "generation_config", None)
    if gen is not None and not (out / "generation_config.json").is_file():
        gen.save_pretrained(str(out))


def _write_recipe(out: Path, config: dict[str, Any]) -> None:
    import yaml

    atomic_write_text(out / "recipe.yaml", yaml.safe_dump(config, sort_keys=True, allow_unicode=True))


def objective(training_args: Any) -> str:
    """The loss in words, e.g. ``sigmoid DPO (beta 0.1) + 0.001 x SFT (chosen NLL)``."""
    types = list(training_args.loss_type)
    weights = list(training_args.loss_weights or [1.0] * len(types))
    parts = []
    for t, w in zip(types, weights, strict=True):
        name = {"sigmoid": f"sigmoid DPO (beta {training_args.beta})",
                "sft": "SFT (token-mean NLL of the chosen judgment)"}.get(t, t)
        parts.append(name if w == 1 else f"{w:g} x {name}")
    return " + ".join(parts) + "; log-probs summed over judgment tokens"


def _filter_summary(report: dict | None) -> dict | None:
    if not report:
        return None
    keys = ("input_pairs", "input_pairs_with_pairs", "lost", "pairs_total", "pairs_by_type", "splits",
            "judgments_read", "judgments_by_class")
    return {k: report[k] for k in keys if k in report}


# --------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------

_CARD_KEYS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "adam_beta1",
              "adam_beta2", "weight_decay", "max_grad_norm", "num_train_epochs", "max_steps",
              "per_device_train_batch_size", "gradient_accumulation_steps", "global_batch_size", "beta",
              "loss_type", "loss_weights", "max_length", "overlong", "precompute_ref_log_probs",
              "bf16", "gradient_checkpointing", "seed", "use_peft", "lora_r", "lora_alpha",
              "load_in_4bit", "max_train_pairs", "pair_types", "center_rewards_coefficient")


def card_info(kind: str, model_args: Any, training_args: Any, config: dict[str, Any],
              counts: dict[str, SplitCounts], filter_report: dict | None,
              metrics: dict[str, float]) -> dict[str, Any]:
    """Everything :func:`model_card` shows, as plain data."""
    return {
        "kind": kind,
        "base_model": model_args.model_name_or_path,
        "objective": objective(training_args) if kind == "judge" else
        "Bradley-Terry: -log sigmoid(r(chosen) - r(rejected)), scalar head on the last token",
        "hyperparameters": {k: config[k] for k in _CARD_KEYS if config.get(k) is not None
                            and (config.get("use_peft") or not k.startswith(("lora_", "load_in_")))},
        "world_size": training_args.world_size,
        "data": {s: asdict(c) for s, c in counts.items()},
        "filter": _filter_summary(filter_report),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and _card_metric(k)},
        "versions": library_versions(),
    }


def _card_metric(key: str) -> bool:
    return any(w in key for w in ("loss", "accurac", "margin")) or key in ("epoch", "train_runtime")


def _table(rows: dict[str, Any]) -> str:
    return "\n".join(["| key | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items())])


def model_card(card: dict[str, Any]) -> str:
    """The README.md of a trained judge (or scalar reward model)."""
    judge = card["kind"] == "judge"
    title = "Con-J generative judge" if judge else "Scalar reward model (Bradley-Terry baseline)"
    lines = ["---", f"base_model: {card['base_model']}", "library_name: transformers",
             f"tags: [{'con-j, judge, dpo, trl' if judge else 'reward-model, trl'}]", "---", "",
             f"# {title}", "",
             f"Trained from `{card['base_model']}` with conj-train "
             f"({card['world_size']} process(es), {card.get('step', 0)} optimizer steps).", "",
             "## Objective", "", card["objective"], "", "## Hyper-parameters", "",
             _table(card["hyperparameters"]), "", "## Data", ""]
    for split, c in card["data"].items():
        dropped = {k: v for k, v in c["dropped"].items() if v}
        lines.append(f"- {split}: {c['used']} pairs used of {c['read']} read"
                     + (f"; dropped {dropped}" if dropped else "")
                     + (f"; {c['truncated']} truncated" if c["truncated"] else "")
                     + (f"; token lengths {c['tokens']}" if c.get("tokens") else ""))
    if card.get("filter"):
        f = card["filter"]
        lines += ["", "Filter stage (contrastive judgment pairs):", "",
                  _table({k: v for k, v in f.items() if k != "splits"})]
    lines += ["", "## Final metrics", ""]
    lines.append(_table({k: round(v, 6) for k, v in card["metrics"].items()}) if card["metrics"]
                 else "(training in progress)")
    lines += ["", "## Usage", ""]
    if judge:
        lines += ["Render the judge prompt (the same template as in training) as the user turn, apply the "
                  "chat template with `add_generation_prompt=True` and generate; the judgment ends with a "
                  "JSON verdict naming the better answer.", "", "```python",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "tok = AutoTokenizer.from_pretrained(PATH)",
                  "model = AutoModelForCausalLM.from_pretrained(PATH)",
                  "ids = tok.apply_chat_template([{'role': 'user', 'content': judge_prompt}],",
                  "                              add_generation_prompt=True, return_tensors='pt')",
                  "print(tok.decode(model.generate(ids, max_new_tokens=512)[0, ids.shape[1]:]))", "```"]
    else:
        lines += ["```python", "from conj_train.train.reward import RewardScorer",
                  "scorer = RewardScorer(PATH)",
                  "r1, r2 = scorer.score_pair(question, answer1, answer2)  # higher is better", "```"]
    lines += ["", "## Versions", "", _table(card["versions"]), ""]
    return "\n".join(lines)
