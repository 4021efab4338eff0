"""A training run's output folder: the claim it carries, its checkpoints and where to resume.

``output_dir/run.json`` holds the run's config hash (the fields that change the trained weights) and
its launch (process count, DeepSpeed), written before the first checkpoint. A folder of another
config is refused (or emptied with ``overwrite``), since resuming would mix two configs; a checkpoint
saved under a launch that cannot load it stops with what to do. ``checkpoint-N/`` folders are saved
every ``save_steps``; the last complete one is resumed automatically (``auto_resume``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.io import atomic_write_json, read_json, stable_hash
from conj_train.runs import data_fingerprint, folder_lock, remove_layout
from conj_train.train.args import resolved_config
from conj_train.train.machine import main_process_first, uses_deepspeed, world_size


def _complete_state(path: Path) -> bool:
    """Whether ``path`` (a checkpoint's trainer_state.json, written last) is whole: a kill -9 during
    the save can leave it empty or torn."""
    import json

    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")).get("global_step"), int)
    except (OSError, ValueError, AttributeError):
        return False


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` whose save completed (trainer_state.json is last
    and whole)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    out = Path(output_dir)
    if not out.is_dir():
        return None
    done = []
    for d in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = d.name.rsplit("-", 1)[-1]
        if step.isdigit() and _complete_state(d / "trainer_state.json"):
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
    "card_license", "card_language",
    # Set from the launch by adapt_to_machine (the launch is compared on its own, see claim_train_dir).
    "use_cpu", "ddp_backend", "gradient_accumulation_steps", "bf16", "fp16", "deepspeed",
})
RUN_CLAIM = "run.json"


def _launch_info(training_args: Any) -> dict[str, Any]:
    return {"world_size": world_size(), "deepspeed": uses_deepspeed(training_args)}


# What a training run writes into its output_dir (the Trainer, conj-train's reports, a LoRA judge's
# merged model): the only names ``--overwrite`` removes. A user's file is never among them, nor any
# name that was in the folder before the run first claimed it (run.json ``preexisting``).
TRAIN_LAYOUT = (
    "checkpoint-*", RUN_CLAIM, "manifest.json", "report.json", "recipe.yaml", "README.md", "metrics.jsonl",
    "metrics.csv", "training_curves.png", "*_results.json", "trainer_state.json", "training_args.bin",
    "config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
    "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json", "tokenizer.json",
    "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "vocab.json", "merges.txt",
    "chat_template.jinja", "chat_template.json", "added_tokens.json", "adapter_config.json",
    "adapter_model.safetensors", "adapter", "runs", "_wandb", "_data_cache", "*.tmp.png",
)


def train_data_hash(dataset: str | Path | None) -> str:
    """Content hash of the pairs a run trains on (a folder's files, a file's bytes; a Hub id by name):
    the claim keys resuming on it, so a checkpoint is never resumed on other pairs."""
    return data_fingerprint(dataset or "")


def claim_train_dir(script_args: Any, training_args: Any, model_args: Any, *, data_hash: str | None = None) -> None:
    """Make ``output_dir`` carry this run's config hash, data hash and launch before its first checkpoint.

    A folder of another config or other pairs (or checkpoints with no claim) is refused unless
    ``overwrite``, which removes what an earlier run wrote (:data:`TRAIN_LAYOUT`, never what was in
    the folder before it): resuming would mix two configs or two versions of the data. A checkpoint
    saved under another launch that cannot load it (DeepSpeed on one side only, or ZeRO over another
    process count) stops with what to do. Every process checks; the main process, first, writes or
    clears.
    """
    from accelerate import PartialState

    out = Path(training_args.output_dir)
    config = {k: v for k, v in resolved_config(script_args, training_args, model_args).items()
              if k not in _TRAIN_RUNTIME and not k.startswith("_")}
    claim: dict[str, Any] = {"config_hash": stable_hash(config), "launch": _launch_info(training_args)}
    if data_hash is not None:
        claim["data_hash"] = data_hash
    main = PartialState().is_main_process
    with main_process_first():
        old = read_json(out / RUN_CLAIM) if (out / RUN_CLAIM).is_file() else None
        has_run = last_checkpoint(out) is not None or (out / "manifest.json").is_file()
        other_config = old is not None and old.get("config_hash") != claim["config_hash"]
        # A claim from before data hashes is taken to be for this data (as the other stages do).
        other_data = (old is not None and data_hash is not None
                      and old.get("data_hash", data_hash) != data_hash)
        stale = other_config or other_data or (old is None and has_run)
        if stale and not script_args.overwrite:
            why = ("a different config" if other_config else
                   "other training pairs (the dataset changed since it started)" if other_data else
                   "checkpoints without a run.json claim")
            raise ConjError(f"{out} holds a training run with {why}; pass --overwrite true to start over "
                            "or choose a new output_dir")
        keep = (old or {}).get("preexisting", [])
        if stale and main:
            remove_layout(out, TRAIN_LAYOUT, keep=keep)
        elif old is not None and _launch_clash(old.get("launch", {}), claim["launch"]):
            ckpt = last_checkpoint(out)
            if ckpt is not None and script_args.auto_resume and not training_args.resume_from_checkpoint:
                raise ConjError(f"{ckpt} was saved by a launch with {_launch_text(old['launch'])}; this one "
                                f"has {_launch_text(claim['launch'])} and cannot load it. Resume with the "
                                "first launch, or pass --overwrite true to start over")
        if old is None:  # the first claim: what is here now is not this run's, and --overwrite keeps it
            keep = sorted(c.name for c in out.iterdir() if c.name not in ("_wandb", "_data_cache")) \
                if out.is_dir() else []
        claim["preexisting"] = keep
        if main and (stale or old is None or old != claim):
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / RUN_CLAIM, claim)


TRAIN_LOCKS = "_locks"  # "_"-prefixed: Trainer.push_to_hub skips it


def train_lock(training_args: Any) -> AbstractContextManager[None]:
    """The lock the main process holds on ``output_dir`` from its claim to the saved model: a second
    training run into the same folder is refused with one line while this one runs (other processes
    of this launch follow their main process)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return nullcontext()
    return folder_lock(training_args.output_dir, "train", folder=TRAIN_LOCKS, what="a training run")


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

