"""The arguments of a training run: TRL's dataclasses plus conj-train's fields, and the recipe parser.

A recipe is TRL's format: a YAML of the dataclasses' fields (``--config recipe.yaml``), or the same
keys as a mapping (``values=``: what ``conj run`` passes), any of them overridden as ``--key value``.
An unknown key is the one-line "did you mean" error of every other stage
(:func:`conj_train.config.values.unknown_key_error`). Building the arguments changes nothing
outside them but the environment (a recipe's ``env:`` mapping, as in TRL; a token moved by
:func:`keep_secrets_out`); the machine set-up that must come first is
:func:`conj_train.train.machine.set_up_machine`, called by the entry points. The scalar reward model's arguments (:mod:`conj_train.train.reward`) reuse the parser and
the value checks.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trl import DPOConfig, ModelConfig, ScriptArguments, TrlParser

from conj_train.config.values import read_yaml, reject_leftover_args, unknown_key_error
from conj_train.errors import ConjError
from conj_train.train.machine import adapt_to_machine
from conj_train.train.tracking import is_secret, redact

OVERLONG_MODES = ("drop", "truncate")


@dataclass
class CardArguments:
    """What the model card (README.md, :mod:`conj_train.train.card`) says that the run cannot know."""

    card_license: str | None = field(
        default=None,
        metadata={"help": "License in the model card's metadata (a Hub license id, e.g. apache-2.0). Default: "
                  "the base model's, when its folder holds a card that names one; else none."},
    )
    card_language: list[str] | None = field(
        default=None,
        metadata={"help": "Languages in the model card's metadata. Default: the judge prompt template's "
                  "language (zh for conj-zh, en for conj-en)."},
    )


@dataclass
class TrainScriptArguments(ScriptArguments, CardArguments):
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
    """TRL's DPOConfig plus ``global_batch_size``, prefix sharing, label-balanced batches and this
    machine's value adjustments (:func:`conj_train.train.machine.adapt_to_machine`)."""

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
        # creates the distributed state (it reads self.device).
        check_train_values(self)
        self.machine_notes = adapt_to_machine(self)
        super().__post_init__()


class _OneLineParser(TrlParser):
    """TrlParser whose errors are one ConjError line, not ~150 lines of usage then the error.

    Abbreviations are off, as in :class:`conj_train.config.parser.ConjParser`: a mistyped ``--learning_rat``
    must be an unknown key, not quietly another one.
    """

    def __init__(self, dataclass_types: tuple[type, ...]) -> None:
        super().__init__(dataclass_types, allow_abbrev=False)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConjError(message)

    @property
    def names(self) -> set[str]:
        """Every recipe key: the dataclasses' fields (``--no_X`` of a boolean field sets ``X``)."""
        return {a.dest for a in self._actions if a.dest != "help"}

    def parse_recipe(self, recipes: Sequence[tuple[Mapping[str, Any], str]], argv: list[str]) -> tuple[Any, ...]:
        """TrlParser's ``parse_args_and_config`` with the recipe given as mappings, checked key by key.

        ``recipes`` are (values, where they come from), later ones winning; as in TRL they become the
        parser's defaults (an ``env:`` mapping sets environment variables) and ``argv`` overrides them.
        An unknown key, in a recipe or on the command line, is :func:`unknown_key_error`'s one line.
        """
        config: dict[str, Any] = {}
        for values, where in recipes:
            values = dict(values)
            env = values.pop("env", None)
            if env is not None:
                if not isinstance(env, dict):
                    raise ConjError(f"{where}: env must be a mapping of variable: value")
                for key, value in env.items():
                    os.environ[key] = str(value)
            unknown = sorted(set(values) - self.names)
            if unknown:
                raise unknown_key_error(unknown[0], self.names, where)
            config.update(values)
        self.set_defaults_with_config(**config)
        *parsed, rest = self.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        reject_leftover_args(rest, self.names)
        return tuple(parsed)


def parse_args(dataclasses: tuple[type, ...], argv: Sequence[str] | None,
               values: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    """Parse ``--config recipe.yaml`` + ``--key value`` overrides with TrlParser; bad input -> ConjError.

    ``values`` is a recipe given as a mapping (what ``conj run`` fills in), read after ``--config``'s
    recipe and before ``argv``; with ``values`` and no ``argv`` the command line is not read.
    """
    if argv is None:
        argv = [] if values is not None else sys.argv[1:]
    argv = list(argv)
    recipes: list[tuple[Mapping[str, Any], str]] = []
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or not Path(argv[i + 1]).is_file():
            raise ConjError(f"recipe not found: {argv[i + 1] if i + 1 < len(argv) else '(missing path)'}")
        path = argv[i + 1]
        del argv[i : i + 2]
        recipes.append((read_yaml(path), path))  # not UTF-8, not YAML or not a mapping: one clear line
    if values is not None:
        recipes.append((values, "recipe values"))
    try:
        with warnings.catch_warnings():
            # transformers 5.2x renamed gradient_checkpointing (TRL's and every recipe's name) and warns
            # on each parse: two lines before every message; the value is still honoured.
            warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
            parsed = _OneLineParser(dataclasses).parse_recipe(recipes, argv)
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


def parse_train_args(argv: Sequence[str] | None = None, *, values: Mapping[str, Any] | None = None,
                     ) -> tuple[TrainScriptArguments, ConjDPOConfig, ModelConfig]:
    """(script, training, model) arguments of a DPO run from a recipe and CLI overrides.

    ``values``: the recipe as a mapping instead of (or on top of) ``--config`` (see :func:`parse_args`).
    """
    classes = (TrainScriptArguments, ConjDPOConfig, ModelConfig)
    return parse_args(classes, argv, values)  # type: ignore[return-value]


_AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "global_batch_size", "max_length", "max_prompt_length", "max_completion_length")


def check_train_values(args: Any) -> None:
    """Refuse values TRL would accept and misread: a run of 0 steps reported as a saved judge, beta <= 0
    (the DPO loss turned around), a batch of 0, a NaN or infinite number (``--beta inf`` trains to NaN
    and would save a judge)."""
    import math
    from dataclasses import fields, is_dataclass

    for f in fields(args) if is_dataclass(args) else ():
        value = getattr(args, f.name, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConjError(f"{f.name} must be a finite number, got {value}")
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



def resolved_config(*args: Any) -> dict[str, Any]:
    """The plain (YAML-writable) fields of argument objects as one dict, credentials redacted."""
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
