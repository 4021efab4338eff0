"""``conj run``: the whole pipeline from one recipe, with a stage cache and iterative rounds.

A pipeline recipe names the inputs once and holds one section per stage, each with exactly that
stage's recipe keys (the keys of ``recipes/<x>/{sample,filter,train,...}.yaml``)::

    output_dir: runs/demo
    model_name_or_path: runs/demo/tiny-model   # the base judge to start from (an instruct model)
    dataset_name: runs/demo/data/train.jsonl   # the preference source
    heldout: runs/demo/data/test.jsonl     # evaluation set (or eval: {dataset_name: ...})
    rounds: 1                              # iterative Con-J: round r samples with round r-1's judge
    round_init: previous                   # train round r from round r-1's judge, or "base"
    warmup: {...}                          # optional SFT warm-up (the demo's stand-in instruct model)
    sample: {...}
    filter: {...}
    train: {...}
    train_rm: {...}                        # optional scalar reward-model baseline
    eval: {...}
    launch:                                # optional: stages started with accelerate launch
      sample: {multi_gpu: true, num_processes: 8}
      train: {config_file: zero3, num_processes: 8}   # a shipped accelerate config, or a path
      eval: {multi_gpu: true, num_processes: 8}

The runner fills in every stage's inputs (``model_name_or_path``, ``dataset_name``, ``output_dir``:
the names every stage uses), so stages chain one way:
``warmup -> sample -> filter -> train -> train_rm -> eval`` under ``output_dir/[round-r/]<stage>/``.

Cache: each stage's key is a hash of its filled-in config and the keys of the stages it reads. A stage
whose key is unchanged and that finished is skipped; a changed key redoes the stage from scratch (its
folder is cleared) and, since later keys include it, everything after it. A stage that was
interrupted with an unchanged key resumes: sampling and evaluation by record, training from its last
checkpoint. The state lives in ``output_dir/pipeline_state.json``. The stages themselves are run by
:mod:`conj_train.pipeline.stages`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from conj_train.config import PUBLISH_FIELDS
from conj_train.config.parser import build_config
from conj_train.config.values import did_you_mean, read_yaml
from conj_train.errors import ConjError
from conj_train.io import atomic_write_json, read_json, stable_hash
from conj_train.pipeline.stages import (
    run_eval_stage,
    run_filter_stage,
    run_sample_stage,
    run_train_rm_stage,
    run_train_stage,
    run_warmup_stage,
)
from conj_train.runs import check_output_dir, folder_lock

STAGES = ("warmup", "sample", "filter", "train", "train_rm", "eval")
ROUND_STAGES = ("sample", "filter", "train", "eval")


@dataclass
class PipelineRecipe:
    """The top-level keys of a pipeline recipe; each stage section is checked by its stage's config.

    The inputs have the stages' names: ``model_name_or_path`` is the base judge (warm-up, round-1
    sampling and the scalar RM start from it), ``dataset_name`` the preference source, ``heldout``
    the evaluation set(s) unless ``eval.dataset_name`` names them.
    """

    output_dir: str = ""
    model_name_or_path: str = ""
    dataset_name: str = ""
    heldout: str | list[str] | None = None
    rounds: int = 1
    round_init: str = "previous"
    # ``seed`` and ``demo`` are read by ``conj demo`` (toy data and its pass mark), not by the stages.
    seed: int = 0
    demo: dict[str, Any] | None = None
    launch: dict[str, Any] | None = None
    warmup: dict[str, Any] | None = None
    sample: dict[str, Any] | None = None
    filter: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    train_rm: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None


TOP_KEYS = {f.name for f in fields(PipelineRecipe)}


@dataclass
class StageRun:
    """What happened to one stage in this invocation."""

    name: str
    status: str  # "ran", "cached", "resumed"
    why: str
    output: Path


@dataclass
class PipelineResult:
    """The stages run or skipped, in order, and where the last evaluation is."""

    output_dir: Path
    stages: list[StageRun] = field(default_factory=list)
    eval_dirs: list[Path] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line per stage: ran / cached / resumed, and why."""
        return "\n".join(f"{s.name:<16} {s.status:<8} {s.why}" for s in self.stages)


def load_pipeline(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read and check a pipeline recipe; ``overrides`` maps ``stage.key`` or top-level keys to values."""
    spec = read_yaml(path)
    for dotted, value in (overrides or {}).items():
        stage, _, key = dotted.partition(".")
        if key:
            spec.setdefault(stage, {})[key] = value
        else:
            spec[stage] = value
    unknown = sorted(set(spec) - TOP_KEYS)
    if unknown:
        raise ConjError(f"{path}: unknown pipeline key {unknown[0]!r}{did_you_mean(unknown[0], TOP_KEYS)} "
                        f"(stages: {', '.join(STAGES)})")
    for name in ("output_dir", "model_name_or_path", "dataset_name"):
        if not spec.get(name):
            raise ConjError(f"{path}: '{name}' is required")
    for name in STAGES:
        if not isinstance(spec.get(name) or {}, dict):
            raise ConjError(f"{path}: section {name!r} must be a mapping")
    build_config(PipelineRecipe, spec, where=str(path))  # value types, as for every stage
    if spec.get("rounds", 1) < 1:
        raise ConjError(f"{path}: rounds must be >= 1 (an integer), got {spec['rounds']!r}")
    if spec.get("round_init", "previous") not in ("previous", "base"):
        raise ConjError(f"{path}: round_init must be 'previous' or 'base'")
    return spec


class _State:
    def __init__(self, out: Path) -> None:
        self.path = out / "pipeline_state.json"
        self.data: dict[str, dict] = read_json(self.path) if self.path.exists() else {}

    def get(self, key: str) -> dict:
        return self.data.get(key, {})

    def set(self, key: str, value: dict) -> None:
        self.data[key] = value
        atomic_write_json(self.path, self.data)


def run_pipeline(path: str | Path, *, from_stage: str | None = None, until: str | None = None,
                 overrides: dict[str, Any] | None = None) -> PipelineResult:
    """Run (or skip, when cached) every stage of the pipeline recipe at ``path``."""
    for name in (from_stage, until):
        if name is not None and name not in STAGES:
            raise ConjError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    if from_stage is not None and until is not None and STAGES.index(from_stage) > STAGES.index(until):
        raise ConjError(f"--from {from_stage} comes after --until {until}: nothing would run")
    spec = load_pipeline(path, overrides)
    data = check_pipeline(spec, path)
    out = check_output_dir(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    # One pipeline writes this folder at a time: a second `conj run` (changed config or not) would
    # clear or redo the stage folders the first one is writing.
    with folder_lock(out, "pipeline", what="a conj run pipeline"):
        return _run_stages(spec, data, out, from_stage, until)


def _run_stages(spec: dict[str, Any], data: dict[str, str], out: Path, from_stage: str | None,
                until: str | None) -> PipelineResult:
    """The stages of a checked pipeline recipe, under the pipeline's lock."""
    state = _State(out)
    result = PipelineResult(out)
    forced = from_stage is not None
    force_from = STAGES.index(from_stage) if from_stage else len(STAGES)

    def stage(name: str, label: str, cfg: dict, inputs: list[str], runner: Any, output: Path,
              sources: Sequence[str] = (), parts: dict[str, str] | None = None) -> str | None:
        """Run one stage unless cached; returns its key, or None once past ``until``.

        ``sources`` are the data sources the stage reads: their content (not their path) is in the key.
        ``parts`` maps sub-folders of ``output`` to their own keys: when the stage's key changes, a
        sub-folder whose key did not change is kept (an evaluation keeps the records of the models
        that did not change, e.g. the base judge in every ablation).
        """
        inputs = [*inputs, *(data[src] for src in sources)]
        # Sampling and evaluation give the same records for any process count: how they are launched
        # stays out of their key (training keeps it: without global_batch_size it changes the batch).
        keyed = {k: v for k, v in cfg.items() if k != "_launch"} if name in ("sample", "eval") else cfg
        if name in ("sample", "filter", "eval"):  # logging or pushing a result does not change it
            keyed = {k: v for k, v in keyed.items() if k not in PUBLISH_FIELDS}
        key = stable_hash({"stage": name, "config": _portable(keyed, out), "inputs": inputs})
        prev = state.get(label)
        force = forced and STAGES.index(name) >= force_from
        if prev.get("key") == key and prev.get("complete") and output.exists() and not force:
            if parts is not None and prev.get("parts") != parts:  # written before parts were kept
                state.set(label, {**prev, "parts": parts})
            result.stages.append(StageRun(label, "cached", "config and inputs unchanged", output))
            return key
        if prev.get("key") == key and not force and output.exists():
            status, why = "resumed", "interrupted earlier with the same config"
        else:
            status = "ran"
            why = ("forced by --from" if force else "first run" if not prev
                   else "config or an input changed")
            if output.exists():
                kept = [] if force else _unchanged_parts(prev.get("parts") or {}, parts or {})
                _clear_stage_folder(output, kept)
                if kept:
                    why += f" (kept: {', '.join(kept)})"
        kept_parts = {"parts": parts} if parts is not None else {}
        state.set(label, {"key": key, "complete": False, **kept_parts})
        print(f"[conj run] {label}: {why}", flush=True)
        runner(cfg, output)
        state.set(label, {"key": key, "complete": True, **kept_parts})
        result.stages.append(StageRun(label, status, why, output))
        return key

    def past_until(name: str) -> bool:
        return until is not None and STAGES.index(name) > STAGES.index(until)

    base = str(spec["model_name_or_path"])
    judge0, judge0_key = base, stable_hash(base)
    if spec.get("warmup") is not None and not past_until("warmup"):
        cfg = {**spec["warmup"], "model_name_or_path": base, "dataset_name": spec["dataset_name"]}
        judge0_key = stage("warmup", "warmup", cfg, [judge0_key], run_warmup_stage, out / "warmup",
                           [spec["dataset_name"]]) or ""
        judge0 = str(out / "warmup")

    rounds = spec.get("rounds", 1)
    launch = spec.get("launch") or {}
    sampler, sampler_key = judge0, judge0_key
    for r in range(1, rounds + 1):
        rdir = out if rounds == 1 else out / f"round-{r}"
        tag = "" if rounds == 1 else f"[round {r}]"
        init = judge0 if spec.get("round_init", "previous") == "base" or r == 1 else sampler
        init_key = judge0_key if init == judge0 else sampler_key
        if past_until("sample"):
            break
        s_cfg = {**(spec.get("sample") or {}), "model_name_or_path": sampler, "dataset_name": spec["dataset_name"],
                 "_launch": launch.get("sample")}
        s_key = stage("sample", f"sample{tag}", s_cfg, [sampler_key], run_sample_stage, rdir / "sample",
                      [spec["dataset_name"]])
        if past_until("filter"):
            break
        f_cfg = {**(spec.get("filter") or {}), "dataset_name": str(rdir / "sample")}
        f_key = stage("filter", f"filter{tag}", f_cfg, [s_key], run_filter_stage, rdir / "filter")
        if past_until("train"):
            break
        t_cfg = {**(spec.get("train") or {}), "model_name_or_path": init, "dataset_name": str(rdir / "filter"),
                 "_launch": launch.get("train")}
        t_key = stage("train", f"train{tag}", t_cfg, [f_key, init_key], run_train_stage, rdir / "train")
        models = [f"base={judge0}", f"conj={rdir / 'train'}"]
        keys = [judge0_key, t_key]
        model_keys = {"base": judge0_key, "conj": t_key}
        if spec.get("train_rm") is not None and r == 1 and not past_until("train_rm"):
            rm_cfg = {**spec["train_rm"], "model_name_or_path": base, "dataset_name": spec["dataset_name"],
                      "pairs_from": str(rdir / "filter"), "_launch": launch.get("train_rm")}
            rm_key = stage("train_rm", "train_rm", rm_cfg, [f_key], run_train_rm_stage, out / "reward",
                           [spec["dataset_name"]])
            models.insert(1, f"rm={out / 'reward'}")
            keys.append(rm_key)
            model_keys["rm"] = rm_key
        elif spec.get("train_rm") is not None and (out / "reward").exists():
            models.insert(1, f"rm={out / 'reward'}")
            keys.append(state.get("train_rm").get("key"))
            model_keys["rm"] = keys[-1]
        if past_until("eval"):
            break
        e_cfg = _eval_section(spec)
        e_cfg["model_name_or_path"] = models
        e_cfg["_launch"] = launch.get("eval")
        stage("eval", f"eval{tag}", e_cfg, [str(k) for k in keys], run_eval_stage, rdir / "eval",
              _eval_sources(e_cfg), _eval_parts(e_cfg, models, model_keys, data))
        _cards_with_results(rdir / "eval", {"conj": rdir / "train", "rm": out / "reward"}, models)
        result.eval_dirs.append(rdir / "eval")
        sampler, sampler_key = str(rdir / "train"), str(t_key)
    return result


def _cards_with_results(eval_dir: Path, folders: dict[str, Path], models: list[str]) -> None:
    """Write the evaluation's results into the model card of each model this pipeline trained."""
    from conj_train.train.card import add_eval_results

    evaluated = {m.split("=", 1)[0] for m in models}
    for name, folder in folders.items():
        if name in evaluated and (folder / "README.md").is_file() and (eval_dir / "metrics.json").is_file():
            add_eval_results(folder, eval_dir, name)


def _eval_section(spec: dict[str, Any]) -> dict[str, Any]:
    e_cfg = dict(spec.get("eval") or {})
    e_cfg.setdefault("dataset_name", spec.get("heldout"))
    return e_cfg


def _eval_parts(e_cfg: dict[str, Any], models: list[str], model_keys: dict[str, Any],
                data: dict[str, str]) -> dict[str, str]:
    """The key of each model's records folder: the evaluation settings, data, model path and model key.

    The model's real path (not the run-relative one) is in the key: the records' own claim names it,
    so a copied run re-evaluates the models that live inside it.
    """
    settings = {k: v for k, v in e_cfg.items() if k not in ("model_name_or_path", "_launch", *PUBLISH_FIELDS)}
    common = stable_hash({"config": settings, "data": [data[src] for src in _eval_sources(e_cfg)]})
    parts = {}
    for spec in models:
        name, _, path = spec.partition("=")
        parts[f"models/{name}"] = stable_hash({"eval": common, "path": path, "model": str(model_keys.get(name))})
    return parts


def _unchanged_parts(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The sub-folders whose key is the same before and now."""
    return sorted(sub for sub, key in now.items() if before.get(sub) == key)


def _clear_stage_folder(output: Path, keep: Sequence[str]) -> None:
    """Remove a stage folder (the pipeline wrote all of it) except the sub-folders in ``keep``.

    Nothing is moved, so a clear killed half-way leaves the kept parts intact for the next run.
    """
    kept = {Path(sub) for sub in keep}
    ancestors = {parent for sub in kept for parent in sub.parents if parent != Path(".")}

    def clear(folder: Path) -> None:
        for child in sorted(folder.iterdir()):
            rel = child.relative_to(output)
            if rel in kept:
                continue
            if rel in ancestors and child.is_dir() and not child.is_symlink():
                clear(child)
            elif child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    if kept:
        clear(output)
    else:
        shutil.rmtree(output)


def _eval_sources(e_cfg: dict[str, Any]) -> list[str]:
    from conj_train.evaluate.config import _named_specs

    return [src for _, src in _named_specs(e_cfg["dataset_name"], "dataset")]


def check_pipeline(spec: dict[str, Any], path: str | Path) -> dict[str, str]:
    """Check every section, path and value of a pipeline recipe before the first stage starts.

    Returns the content fingerprint of every data source the stages read (keys of their cache).
    A typo in ``eval:`` must not be found after hours of sampling and training.
    """
    from conj_train.data.sources import looks_local
    from conj_train.evaluate.config import EvalConfig
    from conj_train.filter.run import FilterConfig
    from conj_train.runs import data_fingerprint
    from conj_train.sample.config import SampleConfig
    from conj_train.train.warmup import WarmupConfig

    here = Path(spec["output_dir"]) / "_check"  # never written: the configs only need a value
    base, dataset = str(spec["model_name_or_path"]), str(spec["dataset_name"])
    if not spec.get("heldout") and not (spec.get("eval") or {}).get("dataset_name"):
        raise ConjError(f"{path}: the eval stage needs 'heldout' or eval.dataset_name")
    e_cfg = _eval_section(spec)
    checks: list[tuple[str, type, dict]] = [
        ("sample", SampleConfig, {"model_name_or_path": base, "dataset_name": dataset, "output_dir": str(here)}),
        ("filter", FilterConfig, {"dataset_name": str(here), "output_dir": str(here)}),
        ("eval", EvalConfig, {"model_name_or_path": [base], "dataset_name": e_cfg["dataset_name"],
                              "output_dir": str(here)}),
    ]
    if spec.get("warmup") is not None:
        checks.append(("warmup", WarmupConfig, {"model_name_or_path": base, "dataset_name": dataset,
                                                "output_dir": str(here)}))
    for name, cls, filled in checks:
        section = dict(spec.get(name) or {})
        if not isinstance(spec.get(name) or {}, dict):
            raise ConjError(f"{path}: section {name!r} must be a mapping")
        build_config(cls, {**section, **filled}, where=f"{path} [{name}]")
    for name in ("train", "train_rm"):
        if spec.get(name) is not None:
            _check_train_section(spec[name], name, path)
    _check_launch(spec.get("launch"), path)
    sources = [dataset, *_eval_sources(e_cfg)]
    if looks_local(base) and not Path(base).expanduser().is_dir():
        raise ConjError(f"{path}: model_name_or_path {base}: no such folder")
    _check_inputs_outside_stage_folders(Path(spec["output_dir"]), [base, *sources], path)
    data: dict[str, str] = {}
    for src in sources:
        if looks_local(src) and not Path(src).expanduser().exists():
            raise ConjError(f"{path}: data source {src}: no such file or folder")
        data[src] = data_fingerprint(src)
    return data


def _check_inputs_outside_stage_folders(out: Path, inputs: Sequence[str], path: str | Path) -> None:
    """Refuse an input (data, base model) inside a stage folder of the pipeline: ``conj run`` clears
    a stage's folder when the stage reruns, and would delete it."""
    from conj_train.runs import check_separate

    stage_dirs = [out / name for name in (*STAGES, "reward")] + sorted(out.glob("round-*"))
    for folder in stage_dirs:
        try:
            check_separate(folder, inputs, what="stage folder")
        except ConjError as e:
            raise ConjError(f"{path}: {e} (conj run clears a stage folder when the stage reruns)") from None


def _check_launch(launch: Any, path: str | Path) -> None:
    """The ``launch:`` section: stage names and launcher keys, checked before the first stage (a typo
    in ``launch.train`` must not be found after sampling and filtering ran)."""
    from conj_train.pipeline.stages import LAUNCH_KEYS, check_launch_settings

    if launch is None:
        return
    launchable = ("sample", "train", "train_rm", "eval")
    if not isinstance(launch, dict):
        raise ConjError(f"{path}: launch must be a mapping of stage: settings ({', '.join(launchable)})")
    for stage_name, settings in launch.items():
        if stage_name not in launchable:
            raise ConjError(f"{path}: launch: {stage_name!r} is not a stage that can be launched"
                            f"{did_you_mean(str(stage_name), launchable)}")
        if settings is None:
            continue
        if not isinstance(settings, dict):
            raise ConjError(f"{path}: launch.{stage_name} must be a mapping ({', '.join(LAUNCH_KEYS)})")
        for key in settings:
            if key not in LAUNCH_KEYS:
                raise ConjError(f"{path}: launch.{stage_name}: unknown key {key!r}"
                                f"{did_you_mean(str(key), LAUNCH_KEYS)} ({', '.join(LAUNCH_KEYS)})")
        try:  # config_file: a file, or a shipped accelerate config's name
            check_launch_settings(settings)
        except ConjError as e:
            raise ConjError(f"{path}: launch.{stage_name}: {e}") from None


def _check_train_section(section: Any, name: str, path: str | Path) -> None:
    """Unknown keys and wrongly typed values of a train / train_rm section (TRL's fields + ours)."""
    import dataclasses

    from conj_train.config.values import check_types, unknown_key_error

    if not isinstance(section, dict):
        raise ConjError(f"{path}: section {name!r} must be a mapping")
    if name == "train":
        from trl import ModelConfig

        from conj_train.train.args import ConjDPOConfig, TrainScriptArguments

        classes: tuple[type, ...] = (TrainScriptArguments, ConjDPOConfig, ModelConfig)
    else:
        from trl import ModelConfig

        from conj_train.train.reward import ConjRewardConfig, RewardScriptArguments

        classes = (RewardScriptArguments, ConjRewardConfig, ModelConfig)
    names = {f.name: cls for cls in classes for f in dataclasses.fields(cls)}
    for key, value in section.items():
        if key not in names:
            raise unknown_key_error(key, names, f"{path} [{name}]")
        check_types(names[key], {key: value}, where=f"{path} [{name}]")


def _portable(value: Any, out: Path) -> Any:
    """``value`` with the run's own folder written as ``<out>``, so a copied run stays cached."""
    if isinstance(value, str):
        return value.replace(str(out), "<out>")
    if isinstance(value, dict):
        return {k: _portable(v, out) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_portable(v, out) for v in value]
    return value
