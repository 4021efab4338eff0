"""The package as a user installs it: the shipped recipes and accelerate configs, and a wheel built from
this checkout, installed (not editable) in a fresh environment, running ``conj run`` with a ``launch:``
section from a folder outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml

from conj_train.cli import main
from conj_train.errors import ConjError
from conj_train.io import read_json
from conj_train.pipeline.recipes import accelerate_config

REPO = Path(__file__).resolve().parents[1]


def test_an_accelerate_config_is_named_or_given_as_a_path(tmp_path: Path) -> None:
    assert accelerate_config("zero3") == REPO / "accelerate_configs" / "zero3.yaml"
    assert accelerate_config("ddp.yaml") == REPO / "accelerate_configs" / "ddp.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("distributed_type: MULTI_GPU\n")
    assert accelerate_config(str(own)) == own
    with pytest.raises(ConjError, match=r"zero4.*ddp, fsdp, multi_node_zero3, zero2, zero3, zero3_offload"):
        accelerate_config("zero4")


def test_a_recipe_copy_starts_an_experiment_and_never_overwrites(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "exp"
    assert main(["recipe", "copy", "demo", str(exp)]) == 0
    shipped = sorted(p.name for p in (REPO / "recipes" / "demo").glob("*.yaml"))
    assert sorted(p.name for p in exp.iterdir()) == shipped
    assert (exp / "pipeline.yaml").read_bytes() == (REPO / "recipes/demo/pipeline.yaml").read_bytes()
    # Into a folder where the user already has a pipeline.yaml: refused, nothing written or changed.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pipeline.yaml").write_text("output_dir: my-runs\n")
    capsys.readouterr()
    assert main(["recipe", "copy", "demo", str(mine)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["pipeline.yaml"]
    assert (mine / "pipeline.yaml").read_text() == "output_dir: my-runs\n"


def _site_packages(env: Path) -> Path:
    return (env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages").resolve()


def _fresh_env_with_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of this checkout's package files and install it, not editable, in a
    new virtual environment that reuses this interpreter's installed dependencies (a ``.pth`` line to
    its site-packages: nothing downloaded); returns the environment's folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("conj_train", "recipes", "accelerate_configs"):  # a copy: no build/ left in the checkout
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(wheels), str(src)], check=True)
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    site = _site_packages(env)
    shared = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "shared-deps.pth").write_text("".join(f"{p}\n" for p in sorted(shared)))
    # pip sees this checkout's editable install through the .pth line but leaves it alone: it is
    # outside the new environment's prefix ("Not uninstalling ... outside environment").
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    *map(str, wheels.glob("*.whl"))], check=True)
    return env


@pytest.mark.slow
def test_an_installed_wheel_launches_its_stages_outside_the_repository(tiny_pipeline, tmp_path: Path) -> None:
    env = _fresh_env_with_wheel(tmp_path)
    installed = _site_packages(env)
    work = tmp_path / "work"  # outside the repository, with no recipes/ or accelerate_configs/ of its own
    work.mkdir()
    recipe = tiny_pipeline(work)
    spec = yaml.safe_load(recipe.read_text())
    spec["launch"] = {"sample": {"config_file": "ddp", "num_processes": 2}}  # a shipped config, by name
    recipe.write_text(yaml.safe_dump(spec))
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout stays off the path
    run_env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="disabled", DS_ACCELERATOR="cpu")

    def conj(*argv: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(env / "bin" / "conj"), *argv], cwd=work, env=run_env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
        return proc

    where = subprocess.run([str(env / "bin" / "python"), "-c", "import conj_train; print(conj_train.__file__)"],
                           cwd=work, env=run_env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve() == installed / "conj_train" / "__init__.py"  # the wheel's copy, not the checkout's

    proc = conj("run", "--config", str(recipe), "--until", "filter")
    launch = next(ln for ln in proc.stdout.splitlines() if "accelerate.commands.launch" in ln)
    assert f"--config_file {installed / 'conj_train' / 'accelerate_configs' / 'ddp.yaml'}" in launch
    assert "-m conj_train.cli.sample" in launch
    run = work / "run"
    assert read_json(run / "sample" / "manifest.json")["shards"] == 2
    assert sorted(p.name for p in (run / "sample" / "judgments").glob("*.jsonl")) == [
        "shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
    assert (run / "filter" / "manifest.json").exists() and (run / "filter" / "dataset").is_dir()

    conj("recipe", "copy", "demo", "exp")  # the recipes are installed too
    assert (work / "exp" / "pipeline.yaml").read_bytes() == (REPO / "recipes/demo/pipeline.yaml").read_bytes()
