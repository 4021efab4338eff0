"""The stage runners of ``conj run``: a filled-in stage config + its output folder -> the stage run.

:func:`conj_train.pipeline.run.run_pipeline` fills in each stage's inputs and decides what to run; these
run it. Every stage runs in this process from its config mapping, except one whose recipe section
has ``launch:`` settings: it is started with ``accelerate launch -m conj_train.cli.<stage>`` (other
processes; the stage's module in the package, so an installed wheel launches as a clone does), which
reads the config from a recipe file written next to the output folder (:func:`write_stage_recipe`).
Either way the stage runs through its one entry function (``conj_train.cli.sample: sample``, ...).
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from conj_train.config.parser import build_config
from conj_train.errors import ConjError

# The one line a stage prints when it refuses (conj_train.cli.main): "conj sample: error: ...".
_STAGE_ERROR = re.compile(r"conj [\w-]+: error: ")
LAUNCH_KEYS = ("config_file", "num_processes", "multi_gpu", "main_process_port")


def run_warmup_stage(cfg: dict, output: Path) -> None:
    """The format warm-up, in this process."""
    from conj_train.train.warmup import WarmupConfig, run_warmup

    run_warmup(build_config(WarmupConfig, {**cfg, "output_dir": str(output)}, where="warmup"))


def run_sample_stage(cfg: dict, output: Path) -> None:
    """Sampling, in this process or under accelerate launch."""
    from conj_train.cli.sample import sample
    from conj_train.sample.run import SampleConfig

    cfg, launch = _stage_config(cfg)
    if launch:
        launch_stage("sample", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    sample(build_config(SampleConfig, {**cfg, "output_dir": str(output)}, where="sample"))


def run_filter_stage(cfg: dict, output: Path) -> None:
    """The filter, in this process."""
    from conj_train.filter.run import FilterConfig, run_filter

    run_filter(build_config(FilterConfig, {**cfg, "output_dir": str(output)}, where="filter"))


def run_eval_stage(cfg: dict, output: Path) -> None:
    """Evaluation, in this process or under accelerate launch."""
    from conj_train.cli.eval import evaluate
    from conj_train.evaluate.config import EvalConfig

    cfg, launch = _stage_config(cfg)
    if launch:
        launch_stage("eval", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    evaluate(build_config(EvalConfig, {**cfg, "output_dir": str(output)}, where="eval"))


def run_train_stage(cfg: dict, output: Path) -> None:
    """DPO training of the judge, in this process (from the mapping) or under accelerate launch."""
    cfg, launch = _stage_config(cfg)
    output.mkdir(parents=True, exist_ok=True)
    if launch:
        launch_stage("train", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    from conj_train.cli.train import train

    # No recipe file in this process: the run writes its resolved arguments to output/recipe.yaml.
    train(values={**cfg, "output_dir": str(output)})


def run_train_rm_stage(cfg: dict, output: Path) -> None:
    """The scalar reward model, in this process (from the mapping) or under accelerate launch."""
    cfg, launch = _stage_config(cfg)
    output.mkdir(parents=True, exist_ok=True)
    if launch:
        launch_stage("train_rm", write_stage_recipe(cfg, output), launch, secrets_env(cfg))
        return
    from conj_train.cli.train_rm import train_rm

    train_rm(values={**cfg, "output_dir": str(output)})


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


def check_launch_settings(launch: dict) -> None:
    """Refuse an unknown launcher key or a ``config_file`` that is neither a file nor a shipped
    accelerate config's name, before any stage runs."""
    unknown = sorted(set(launch) - set(LAUNCH_KEYS))
    if unknown:
        raise ConjError(f"launch: unknown key {unknown[0]!r} ({', '.join(LAUNCH_KEYS)})")
    if launch.get("config_file"):
        from conj_train.pipeline.recipes import accelerate_config

        accelerate_config(str(launch["config_file"]))


def launch_command(stage: str, recipe: Path, launch: dict) -> list[str]:
    """``accelerate launch [settings] -m conj_train.cli.<stage> --config recipe``: the launcher
    settings (``config_file``: a path or a shipped config's name such as ``zero3``,
    ``num_processes``, ``multi_gpu``, ``main_process_port``), then the stage's module."""
    from conj_train.pipeline.recipes import accelerate_config

    check_launch_settings(launch)
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.get("config_file"):
        cmd += ["--config_file", str(accelerate_config(str(launch["config_file"])))]
    if launch.get("multi_gpu"):
        cmd.append("--multi_gpu")
    for key in ("num_processes", "main_process_port"):
        if launch.get(key):
            cmd += [f"--{key}", str(launch[key])]
    return [*cmd, "-m", f"conj_train.cli.{stage}", "--config", str(recipe)]


def launch_stage(stage: str, recipe: Path, launch: dict, env: dict[str, str] | None = None) -> None:
    """Start a stage's module under ``accelerate launch`` (:func:`launch_command`); ``env`` adds to
    the environment (the stage's secrets, :func:`secrets_env`)."""
    cmd = launch_command(stage, recipe, launch)
    print("[conj run] " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    errors = forward_until_stage_error(proc.stderr.fileno(), sys.stderr)
    proc.wait()
    if errors:  # the stage's own one-line refusal, once, without the launcher's failure report
        raise ConjError(errors[0].split(": error: ", 1)[1])
    if proc.returncode != 0:
        raise ConjError(f"{stage} failed under accelerate launch (exit {proc.returncode})")


def forward_until_stage_error(fd: int, sink: TextIO) -> list[str]:
    """Copy a launcher's stderr to ``sink`` as it comes (progress bars included) until a process of the
    stage prints its ``conj STAGE: error: ...`` line; returns those lines, which are not copied.

    What the launcher prints after a stage's refusal (torch elastic's failure report: tracebacks of
    the launcher itself, one block per process, ~80 lines) says nothing the refusal did not, so it is
    read and dropped. A crash without such a line is copied whole: its traceback is the diagnosis.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
    errors: list[str] = []
    pending = ""
    while chunk := os.read(fd, 65536):
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            if _STAGE_ERROR.match(line.rsplit("\r", 1)[-1]):  # after a progress bar's last redraw
                errors.append(line)
            elif not errors:
                sink.write(line + "\n")
        # A progress bar redraws with \r and no newline: show it now, unless it may be an error line.
        if pending and not errors and not pending.startswith("conj"):
            sink.write(pending)
            pending = ""
        sink.flush()
    if pending and not errors:
        sink.write(pending)
    return errors
