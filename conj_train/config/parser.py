"""``ConjParser``: recipe YAML + ``--key value`` overrides -> a checked stage config dataclass.

Built on transformers' :class:`~transformers.HfArgumentParser`, as TRL's ``TrlParser`` (train and
train-rm, :mod:`conj_train.train.args`) is. Every value, from YAML or from the command line, is typed
the YAML way (``--n 4`` is an integer, ``--hint_reading=code`` a string, ``[a, b]`` a list, ``null``
None) and then checked against the field's annotation and the bounds of
:mod:`conj_train.config.values`: argparse cannot type ``Any``, ``dict`` or union fields, and one check
for both sources keeps their errors alike. Unknown keys are errors, not silently ignored (a typo in
an ablation must not quietly run the default); the error suggests the closest key, or the new name
of a renamed one.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser

from conj_train.config.values import (
    add_settings,
    check_types,
    read_yaml,
    reject_leftover_args,
    unknown_key_error,
)
from conj_train.errors import ConjError

T = TypeVar("T")


class ConjParser(HfArgumentParser):
    """HfArgumentParser for a stage config dataclass and its nested parts, with YAML-typed values.

    ``ConjParser(SampleConfig).parse("recipe.yaml", ["--n", "4"])`` reads the recipe, applies the
    overrides and returns a checked ``SampleConfig``. Each setting is one ``--name`` option (grouped
    by the part that defines it in ``--help``); values are read by :func:`yaml_value` and checked by
    :func:`check_types` whatever their source. Bad input of any kind is a one-line ConjError.
    """

    def __init__(self, cls: type, **kwargs: Any) -> None:
        self.stage_cls = cls
        # setting name -> (the part whose annotation types it, the nested field holding it or None)
        self.settings: dict[str, tuple[type, str | None]] = {}
        kwargs.setdefault("allow_abbrev", False)  # "--model" must never abbreviate "--model_kind"
        kwargs.setdefault("add_help", False)
        super().__init__([cls], **kwargs)

    def error(self, message: str) -> typing.NoReturn:  # argparse would print usage and exit
        """Raise argparse's complaint as a ConjError (one line, exit 2)."""
        raise ConjError(message)

    def _add_dataclass_arguments(self, dtype: type) -> None:  # called by HfArgumentParser.__init__
        self.settings.update(add_settings(self, dtype))

    def parse_cli(self, argv: Sequence[str]) -> dict[str, Any]:
        """The settings given as ``--key value`` / ``--key=value`` / ``--flag`` (true)."""
        namespace, rest = self.parse_known_args(list(argv))
        reject_leftover_args(rest, self.settings)
        return vars(namespace)

    def build(self, values: dict[str, Any], *, where: str = "config") -> Any:
        """The stage config of ``values`` (flat settings); unknown keys or bad values raise a ConjError."""
        unknown = sorted(set(values) - set(self.settings))
        if unknown:
            raise unknown_key_error(unknown[0], self.settings, where)
        for key, value in values.items():
            check_types(self.settings[key][0], {key: value}, where=where)
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        hints = typing.get_type_hints(self.stage_cls)
        for f in dataclasses.fields(self.stage_cls):
            if dataclasses.is_dataclass(hints[f.name]):
                nested[f.name] = {}
        for key, value in values.items():
            owner, holder = self.settings[key]
            if typing.get_origin(typing.get_type_hints(owner)[key]) is tuple:
                value = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else tuple(value)
            (nested[holder] if holder else top)[key] = value
        try:
            parts = {name: hints[name](**kw) for name, kw in nested.items()}
            cfg = self.stage_cls(**top, **parts)
        except (TypeError, ValueError) as e:
            raise ConjError(f"{where}: {e}") from e
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()
        return cfg

    def parse(self, path: str | Path | None = None, argv: Sequence[str] = (), *, section: str | None = None,
              fixed: dict[str, Any] | None = None) -> Any:
        """Recipe ``path`` (or its ``section:``), then ``argv`` overrides, then ``fixed`` values."""
        values: dict[str, Any] = {}
        where = "command-line options"
        if path is not None:
            values = read_yaml(path)
            if section is not None:
                values = values.get(section) or {}
                if not isinstance(values, dict):
                    raise ConjError(f"{path}: section {section!r} must be a mapping")
            where = f"{path}" + (f" [{section}]" if section else "")
        values = {**values, **self.parse_cli(argv), **(fixed or {})}
        return self.build(values, where=where)


def build_config(cls: type[T], values: dict[str, Any], *, where: str = "config") -> T:
    """Instantiate stage config ``cls`` from flat ``values``; unknown keys or bad values raise a ConjError."""
    return ConjParser(cls).build(values, where=where)


def load_config(cls: type[T], path: str | Path | None, overrides: Sequence[str] = (),
                *, section: str | None = None, fixed: dict[str, Any] | None = None) -> T:
    """Load a recipe (optionally one ``section:`` of it) into ``cls`` and apply CLI overrides."""
    return ConjParser(cls).parse(path, overrides, section=section, fixed=fixed)
