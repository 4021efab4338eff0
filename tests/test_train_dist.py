"""Two processes on CPU through ``accelerate launch`` (DDP over gloo, DeepSpeed ZeRO-3) give the losses
and weights of one process over the same global batch.

Every run has ``global_batch_size: 8`` in micro-batches of 2: one process accumulates 4 of them, two
processes 2 each. TRL's SFT term is a token mean per micro-batch, so "the same global batch" means the
same micro-batches, which accelerate's batch sharding gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_train import assert_same_weights, train_argv, write_pairs

from conj_train.io import iter_jsonl, read_json

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
STEPS = 4


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in iter_jsonl(out / "metrics.jsonl") if "loss" in r]


def launch(launcher_args: list[str], argv: list[str]) -> None:
    """Run scripts/train.py under accelerate launch with 2 processes; fail with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launcher_args, "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "scripts" / "train.py"), *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One process, micro-batch 2 x 4 accumulation steps."""
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    tmp = tmp_path_factory.mktemp("dist")
    data = write_pairs(tmp / "filter", 16, 4)
    common = {"max_steps": STEPS, "per_device_train_batch_size": 2, "global_batch_size": 8, "save_steps": 100}
    run_train(*parse_train_args(train_argv(tiny_model_dir, data, tmp / "one", **common)))
    return SimpleNamespace(model=tiny_model_dir, data=data, tmp=tmp, out=tmp / "one", common=common,
                           losses=_losses(tmp / "one"))


def test_ddp_two_processes_match_one_process(reference: SimpleNamespace) -> None:
    out = reference.tmp / "ddp"
    launch(["--multi_gpu"], train_argv(reference.model, reference.data, out, **reference.common))
    report = read_json(out / "report.json")
    assert (report["world_size"], report["distributed_type"]) == (2, "MULTI_CPU")
    assert len(reference.losses) == STEPS
    one = read_json(reference.out / "report.json")
    assert one["machine_notes"][0].startswith("gradient_accumulation_steps=4")
    assert report["machine_notes"][0].startswith("gradient_accumulation_steps=2")
    assert _losses(out) == pytest.approx(reference.losses, abs=1e-4)
    assert_same_weights(reference.out, out, 1e-4)


def test_zero3_two_processes_match_one_process(reference: SimpleNamespace) -> None:
    # precompute_ref_log_probs under several processes needs file-backed datasets (see dpo.py).
    out = reference.tmp / "zero3"
    launch(["--config_file", str(REPO / "accelerate_configs" / "zero3.yaml")],
           train_argv(reference.model, reference.data, out, precompute_ref_log_probs=True,
                      **reference.common))
    report = read_json(out / "report.json")
    assert (report["world_size"], report["distributed_type"]) == (2, "DEEPSPEED")
    assert _losses(out) == pytest.approx(reference.losses, abs=1e-4)
    assert_same_weights(reference.out, out, 1e-4)


def test_zero3_resume_after_the_final_checkpoint_takes_no_further_step(reference: SimpleNamespace) -> None:
    """Killed right after the last checkpoint under DeepSpeed: the rerun loads it (DeepSpeed's own
    resume) and saves the same weights, at max_steps, rather than taking one step more."""
    out = reference.tmp / "zero3-resume"
    argv = train_argv(reference.model, reference.data, out, **{**reference.common, "save_steps": 2, "max_steps": 2,
                                                               "lr_scheduler_type": "constant"})
    launcher = ["--config_file", str(REPO / "accelerate_configs" / "zero3.yaml")]
    launch(launcher, argv)
    finished = (out / "model.safetensors").read_bytes()
    for name in ("manifest.json", "model.safetensors", "trainer_state.json"):  # as if killed before the final save
        (out / name).unlink()
    launch(launcher, argv)
    assert read_json(out / "report.json")["resumed_from"].endswith("checkpoint-2")
    assert read_json(out / "trainer_state.json")["global_step"] == 2
    assert (out / "model.safetensors").read_bytes() == finished
