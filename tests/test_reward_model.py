"""The scalar reward model as a scorer and a pairwise judge (conj_train/inference/reward_model.py) on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conj_train.inference.reward_model import RewardModel, detect_model_kind, sigmoid


def test_reward_model_compares_by_score(tiny_rm_dir: Path) -> None:
    assert detect_model_kind(str(tiny_rm_dir)) == "rm"
    rm = RewardModel.from_pretrained(str(tiny_rm_dir), threads=1)
    ids = [rm.encode("Name a fruit.", a) for a in ("An apple.", "A hammer, obviously, a hammer.")]
    with torch.inference_mode():
        direct = [float(rm.model(input_ids=torch.tensor([s])).logits[0, 0]) for s in ids]
    assert rm.score_ids(ids) == pytest.approx(direct, abs=1e-5)  # padded batch = one at a time
    v = rm.compare("Name a fruit.", "An apple.", "A hammer, obviously, a hammer.")
    assert v.better == (1 if direct[0] > direct[1] else 2)
    assert v.probability == pytest.approx(sigmoid(direct[0] - direct[1]), abs=1e-5)


def test_causal_lm_is_detected_as_judge(tiny_model_dir: Path) -> None:
    assert detect_model_kind(str(tiny_model_dir)) == "judge"


def test_one_loader_for_both_scorers(tiny_model_dir: Path, tiny_rm_dir: Path, tmp_path: Path) -> None:
    """RewardModel and VerdictScorer load through conj_train.inference.loading.load_model: eval mode, dtype, errors."""
    import shutil

    from conj_train.errors import ConjError
    from conj_train.inference.probability import VerdictScorer

    rm = RewardModel.from_pretrained(str(tiny_rm_dir), threads=1, dtype="float32")
    reader = VerdictScorer.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu")
    for model in (rm.model, reader.model):
        assert not model.training and next(model.parameters()).dtype == torch.float32
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ConjError, match=r"cannot load a causal LM from .*no-weights"):
        VerdictScorer.from_pretrained(str(no_weights))
    with pytest.raises(ConjError, match=r"cannot load a sequence-classification model from .*no-weights"):
        RewardModel.from_pretrained(str(no_weights))
