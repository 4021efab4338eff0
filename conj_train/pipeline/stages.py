"""The stage runners of ``conj run``: a filled-in stage config + its output folder -> the stage run.

:func:`conj_train.pipeline.run.run_pipeline` fills in each stage's inputs and decides what to run; these
run it. Every stage runs in this process from its config mapping, except one whose recipe section
has ``launch:`` settings: it is started with ``accelerate launch`` (other processes), which reads the
config from a recipe file written next to the output folder (:func:`write_stage_recipe`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conj_train.config.parser import build_config
from conj_train.errors import ConjError

LAUNCH_KEYS = ("config_file", "num_processes", "multi_gpu", "main_process_port")


def run_warmup_stage(cfg: dict, output: Path) -> None:
    """The format warm-up, in this process."""
    from conj_train.train.warmup import WarmupConfig, run_warmup

    run_warmup(build_config(WarmupConfig, {**cfg, "output_dir": str(output)}, where="warmup"))


def run_sample_stage(cfg: dict, output: Path) -> None:
    """Sampling, in this process or under accelerate launch."""
    from conj_train.sample.run import SampleConfig, run_sample

    cfg, launch = _stage_config(cfg)
    if launch:
        launch_script("sample.py", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    run_sample(build_config(SampleConfig, {**cfg, "output_dir": str(output)}, where="sample"))


def run_filter_stage(cfg: dict, output: Path) -> None:
    """The filter, in this process."""
    from conj_train.filter.run import FilterConfig, run_filter

    run_filter(build_config(FilterConfig, {**cfg, "output_dir": str(output)}, where="filter"))


def run_eval_stage(cfg: dict, output: Path) -> None:
    """Evaluation, in this process or under accelerate launch."""
    from conj_train.evaluate.run import EvalConfig, run_eval

    cfg, launch = _stage_config(cfg)
    if launch:
        launch_script("eval.py", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    run_eval(build_config(EvalConfig, {**cfg, "output_dir": str(output)}, where="eval"))


def run_train_stage(cfg: dict, output: Path) -> None:
    """DPO training of the judge, in this process (from the mapping) or under accelerate launch."""
    cfg, launch = _stage_config(cfg)
    output.mkdir(parents=True, exist_ok=True)
    if launch:
        launch_script("train.py", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train
    from conj_train.train.machine import set_up_machine, uses_deepspeed

    # No recipe file in this process: the run writes its resolved arguments to output/recipe.yaml.
    values = {**cfg, "output_dir": str(output)}
    set_up_machine([], deepspeed=uses_deepspeed() or bool(values.get("deepspeed")))
    run_train(*parse_train_args([], values=values))


def run_train_rm_stage(cfg: dict, output: Path) -> None:
    """The scalar reward model, in this process (from the mapping) or under accelerate launch."""
    cfg, launch = _stage_config(cfg)
    output.mkdir(parents=True, exist_ok=True)
    if launch:
        launch_script("train_rm.py", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    from conj_train.train.machine import set_up_machine, uses_deepspeed
    from conj_train.train.reward import parse_reward_args, run_train_rm

    values = {**cfg, "output_dir": str(output)}
    set_up_machine([], deepspeed=uses_deepspeed() or bool(values.get("deepspeed")))
    run_train_rm(*parse_reward_args([], values=values))


def _stage_config(cfg: dict) -> tuple[dict, dict | None]:
    """(the stage's own keys, its ``accelerate launch`` settings or None) of a filled-in config."""
    cfg = dict(cfg)
    return cfg, cfg.pop("_launch", None)


def write_stage_recipe(cfg: dict, output: Path) -> Path:
    """Write a stage's filled-in config as a flat recipe next to its output folder.

    Only for a stage started with ``accelerate launch``: its processes read the config as the
    ``--config`` recipe of the stage's script. A stage run in this process is built from the mapping.
    """
    import yaml

    from conj_train.trackers import is_secret

    output.parent.mkdir(parents=True, exist_ok=True)
    path = output.parent / f"{output.name}.recipe.yaml"
    plain = {k: v for k, v in cfg.items() if not is_secret(k, v)}  # secrets go by environment
    path.write_text(yaml.safe_dump({**plain, "output_dir": str(output)}, sort_keys=False))
    return path


def secrets_env(cfg: dict) -> dict[str, str]:
    """The environment a launched stage gets its secrets from, never a file: ``hub_token`` as
    ``HF_TOKEN`` (where pushing reads it). Any other secret-looking key is refused: its place is
    the environment."""
    from conj_train.trackers import is_secret

    env: dict[str, str] = {}
    for key, value in cfg.items():
        if not is_secret(key, value):
            continue
        if key != "hub_token":
            raise ConjError(f"{key}: a secret cannot be passed to a launched stage; set it in the environment")
        env["HF_TOKEN"] = value
    return env


def launch_script(script: str, recipe: Path, launch: dict, env: dict[str, str] | None = None) -> None:
    """Start a stage script under ``accelerate launch`` with the recipe's launcher settings
    (``config_file``, ``num_processes``, ``multi_gpu``, ``main_process_port``); ``env`` adds to the
    environment (the stage's secrets, :func:`secrets_env`)."""
    unknown = sorted(set(launch) - set(LAUNCH_KEYS))
    if unknown:
        raise ConjError(f"launch: unknown key {unknown[0]!r} ({', '.join(LAUNCH_KEYS)})")
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.get("config_file"):
        cmd += ["--config_file", str(launch["config_file"])]
    if launch.get("multi_gpu"):
        cmd.append("--multi_gpu")
    for key in ("num_processes", "main_process_port"):
        if launch.get(key):
            cmd += [f"--{key}", str(launch[key])]
    cmd += [str(scripts / script), "--config", str(recipe)]
    print("[conj run] " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        raise ConjError(f"{script} failed under accelerate launch (exit {proc.returncode})")
