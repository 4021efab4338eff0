"""The recipes and accelerate configs the package ships, found the same way in a wheel and in a clone.

The repository keeps them at its top (``recipes/``, ``accelerate_configs/``), where the README's
commands point. A wheel installs the same files inside the package (``conj_train/recipes/``,
``conj_train/accelerate_configs/``: setup.py maps the folders, nothing is copied in the source tree).
A clone, installed editable or on ``PYTHONPATH``, has them one level above the package: setuptools'
editable finder cannot import a mapped folder without an ``__init__.py``, so they are looked up as
folders (:func:`shipped_dir`), not through ``importlib.resources``.

``conj recipe list`` / ``conj recipe copy NAME DIR`` start an experiment from a shipped recipe;
``launch: {train: {config_file: zero3}}`` names a shipped accelerate config
(:func:`accelerate_config`), as TRL's ``--accelerate_config zero3`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from conj_train.errors import ConjError

PACKAGE = Path(__file__).resolve().parents[1]


def shipped_dir(name: str) -> Path:
    """The folder ``name`` (``recipes`` or ``accelerate_configs``): inside the installed package (a
    wheel), else at the top of the clone the package is imported from."""
    for folder in (PACKAGE / name, PACKAGE.parent / name):
        if folder.is_dir():
            return folder
    raise ConjError(f"{name}/ is not installed with this copy of conj_train ({PACKAGE})")


def accelerate_config_names() -> list[str]:
    """The shipped accelerate configs, by name (``zero3`` for ``accelerate_configs/zero3.yaml``)."""
    return sorted(p.stem for p in shipped_dir("accelerate_configs").glob("*.yaml"))


def accelerate_config(value: str) -> Path:
    """An accelerate config file from a ``config_file`` setting: an existing file as given, else the
    shipped config of that name (``zero3`` or ``zero3.yaml``)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    names = accelerate_config_names()
    stem = value[:-5] if value.endswith(".yaml") else value
    if "/" in value or stem not in names:
        raise ConjError(f"config_file {value!r}: no such file, and not a shipped accelerate config "
                        f"({', '.join(names)})")
    return shipped_dir("accelerate_configs") / f"{stem}.yaml"


def recipe_names() -> list[str]:
    """The shipped recipes: each folder of ``recipes/`` that holds YAML files, as its relative path."""
    root = shipped_dir("recipes")
    folders = {p.parent for p in root.rglob("*.yaml")}
    return sorted(f.relative_to(root).as_posix() for f in folders)


def copy_recipe(name: str, dest: str | Path) -> list[Path]:
    """Copy the shipped recipe folder ``name`` (its files, not its sub-recipes) into ``dest``.

    Refuses before writing anything when a file of that name already exists in ``dest``: nothing a
    user owns is overwritten. Returns the files written.
    """
    names = recipe_names()
    if name not in names:
        from conj_train.config.values import did_you_mean

        raise ConjError(f"no shipped recipe {name!r}{did_you_mean(name, names)} ({', '.join(names)})")
    source = shipped_dir("recipes") / name
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    dest = Path(dest).expanduser()
    taken = [dest / p.name for p in files if (dest / p.name).exists()]
    if taken:
        raise ConjError(f"{taken[0]} already exists: copy into a new folder (nothing is overwritten)")
    dest.mkdir(parents=True, exist_ok=True)
    for p in files:
        with open(dest / p.name, "xb") as f:  # "x": a file that appeared since the check is not replaced
            f.write(p.read_bytes())
        shutil.copymode(p, dest / p.name)  # prepare.sh stays executable
    return [dest / p.name for p in files]
