"""Prefix-shared DPO equals TRL's DPOTrainer: loss, gradients, metrics, LoRA, precompute, ZeRO-3.

Run as a script it is the 2-process ZeRO-3 worker of ``test_zero3_matches_trl`` (see ``_zero3_main``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "answer", "one", "two", "is",
         "better", "because", "回答", "更好", "原因", "准确", "完整", "reason", "first", "second"]
RTOL = 1e-5


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Conversational pairs with prompts and judgments of unequal lengths."""
    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": _text(rng, 3, 20)}],
             "chosen": [{"role": "assistant", "content": _text(rng, 1, 15)}],
             "rejected": [{"role": "assistant", "content": _text(rng, 1, 15)}]} for _ in range(n)]


def _config(out: Path, **overrides: Any) -> Any:
    from trl import DPOConfig

    values = dict(output_dir=str(out), per_device_train_batch_size=4, max_length=72, bf16=False,
                  use_cpu=True, gradient_checkpointing=False, report_to="none", save_strategy="no",
                  loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.1], beta=0.1, logging_steps=1,
                  dataloader_drop_last=True)
    values.update(overrides)
    return DPOConfig(**values)


def _perturbed(model_dir: Path, dtype: Any = None) -> Any:
    """The tiny model with seeded noise on its weights, so policy and reference differ."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)
    return model


def _trainer(cls: Any, model_dir: Path, out: Path, rows: list[dict[str, Any]], peft: Any = None,
             **overrides: Any) -> Any:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warnings.filterwarnings("ignore", category=FutureWarning)
    ref = None if peft is not None else AutoModelForCausalLM.from_pretrained(model_dir)
    return cls(model=_perturbed(model_dir), ref_model=ref, args=_config(out, **overrides),
               train_dataset=Dataset.from_list(rows),
               processing_class=AutoTokenizer.from_pretrained(model_dir), peft_config=peft)


def _loss_and_grads(trainer: Any, batch: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(dict(batch)))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _grad_rel_err(a: dict[str, Any], b: dict[str, Any]) -> float:
    assert a.keys() == b.keys() and a
    num = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5
    den = sum(float((a[k] ** 2).sum()) for k in a) ** 0.5
    return num / den


def _batches(trainer: Any, n_batches: int, size: int = 4) -> list[dict[str, Any]]:
    data = trainer.train_dataset
    return [trainer.data_collator([data[i] for i in range(k * size, (k + 1) * size)])
            for k in range(n_batches)]


def _compare(tmp_path: Path, model_dir: Path, rows: list[dict[str, Any]], peft: Any = None,
             **overrides: Any) -> tuple[Any, Any, list[dict[str, Any]]]:
    from trl import DPOTrainer

    from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer

    ours = _trainer(PrefixSharedDPOTrainer, model_dir, tmp_path / "ours", rows, peft, **overrides)
    theirs = _trainer(DPOTrainer, model_dir, tmp_path / "trl", rows, peft, **overrides)
    return ours, theirs, _batches(theirs, len(theirs.train_dataset) // 4)


def test_loss_and_grads_match_trl_dpo_sft(tiny_model_dir: Path, tmp_path: Path) -> None:
    ours, theirs, batches = _compare(tmp_path, tiny_model_dir, _pairs(8))
    mask = batches[0]["attention_mask"]
    assert (mask == 0).any() and mask.shape[1] == 72  # padding and max_length truncation both occur
    for batch in batches:
        loss_a, grads_a = _loss_and_grads(theirs, batch)
        loss_b, grads_b = _loss_and_grads(ours, batch)
        assert loss_b == pytest.approx(loss_a, rel=RTOL)
        assert _grad_rel_err(grads_a, grads_b) < RTOL
    stats = ours.prefix_sharing_stats()
    assert stats["policy"].shared == 2 and stats["reference"].shared == 2
    assert stats["policy"].fallback == stats["reference"].fallback == 0
    for key in ("logps/chosen", "logps/rejected", "rewards/margins", "entropy", "mean_token_accuracy"):
        assert ours._metrics["train"][key] == pytest.approx(theirs._metrics["train"][key], rel=RTOL, abs=1e-6)


def test_lora_matches_trl(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"])
    ours, theirs, batches = _compare(tmp_path, tiny_model_dir, _pairs(8), peft=lora)
    for trainer in (ours, theirs):  # LoRA B starts at zero: move it so the policy leaves the reference
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for name, p in sorted(trainer.model.named_parameters()):
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    loss_a, grads_a = _loss_and_grads(theirs, batches[0])
    loss_b, grads_b = _loss_and_grads(ours, batches[0])
    assert all("lora_" in k for k in grads_b)
    assert loss_b == pytest.approx(loss_a, rel=RTOL)
    assert _grad_rel_err(grads_a, grads_b) < RTOL
    # One LM serves the policy and the adapter-disabled reference: two shared calls.
    assert ours.ref_model is None and ours.prefix_sharing_stats()["policy"].shared == 2


def test_bf16_mixed_precision_scores_both_models_in_bf16_like_trl(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Under bf16 autocast the shared path runs both policy and reference matmuls in bf16, as TRL does.

    accelerate wraps the model's own forward in autocast; the shared path replaces that forward, so
    without entering the accelerator's autocast itself the reference was scored in fp32. (The
    first-batch check runs at the weights' dtype on purpose, so it is off here.)
    """
    import functools

    import torch
    from trl import DPOTrainer

    from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer

    unchecked = functools.partial(PrefixSharedDPOTrainer, verify_prefix_sharing=False)
    dtypes = {}
    for name, cls in (("ours", unchecked), ("trl", DPOTrainer)):
        trainer = _trainer(cls, tiny_model_dir, tmp_path / name, _pairs(4), bf16=True, max_steps=1)
        seen: dict[str, set] = {"policy": set(), "reference": set()}
        for role, model in (("policy", trainer.model), ("reference", trainer.ref_model)):
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.register_forward_hook(lambda m, i, o, out=seen[role]: out.add(o.dtype))
        trainer.train()
        dtypes[name] = seen
    assert dtypes["ours"] == dtypes["trl"] == {"policy": {torch.bfloat16}, "reference": {torch.bfloat16}}


def test_bf16_first_batch_check_keeps_sharing_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The first-batch check compares layouts at the weights' dtype (autocast off), so bf16 mixed
    precision does not turn sharing off on rounding differences."""
    from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer

    trainer = _trainer(PrefixSharedDPOTrainer, tiny_model_dir, tmp_path, _pairs(4), bf16=True, max_steps=1)
    trainer.train()
    stats = trainer.prefix_sharing_stats()
    assert set(stats) == {"policy", "reference"}
    assert all(st.shared >= 1 and st.fallback == 0 for st in stats.values())


def test_precomputed_reference_log_probs_match(tiny_model_dir: Path, tmp_path: Path) -> None:
    import numpy as np

    ours, theirs, batches = _compare(tmp_path, tiny_model_dir, _pairs(8), precompute_ref_log_probs=True)
    for col in ("ref_chosen_logps", "ref_rejected_logps"):
        np.testing.assert_allclose(ours.train_dataset[col], theirs.train_dataset[col], rtol=RTOL)
    assert ours.prefix_sharing_stats()["reference"].shared == 2  # computed here: 8 pairs, 2 batches
    loss_a, grads_a = _loss_and_grads(theirs, batches[0])
    loss_b, grads_b = _loss_and_grads(ours, batches[0])
    assert loss_b == pytest.approx(loss_a, rel=RTOL) and _grad_rel_err(grads_a, grads_b) < RTOL


def test_non_reentrant_gradient_checkpointing_keeps_sharing(tiny_model_dir: Path, tmp_path: Path) -> None:
    ours, theirs, batches = _compare(tmp_path, tiny_model_dir, _pairs(4), gradient_checkpointing=True,
                                     gradient_checkpointing_kwargs={"use_reentrant": False})
    for trainer in (ours, theirs):
        trainer.model.gradient_checkpointing_enable(trainer.args.gradient_checkpointing_kwargs)
    loss_a, grads_a = _loss_and_grads(theirs, batches[0])
    loss_b, grads_b = _loss_and_grads(ours, batches[0])
    assert loss_b == pytest.approx(loss_a, rel=RTOL) and _grad_rel_err(grads_a, grads_b) < RTOL
    assert ours.prefix_sharing_stats()["policy"].fallback == 0


def test_reentrant_gradient_checkpointing_falls_back(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer

    trainer = _trainer(PrefixSharedDPOTrainer, tiny_model_dir, tmp_path, _pairs(4),
                       gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True})
    trainer.model.gradient_checkpointing_enable(trainer.args.gradient_checkpointing_kwargs)
    _loss_and_grads(trainer, _batches(trainer, 1)[0])
    stats = trainer.prefix_sharing_stats()["policy"]
    assert stats.shared == 0 and any("reentrant" in r for r in stats.reasons)


def _tiny_random_lm(attn: str, dtype: Any) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, attn_implementation=attn)
    return Qwen2ForCausalLM(config).to(dtype)


def _collated(lengths: list[tuple[int, int, int]], seed: int = 0) -> dict[str, Any]:
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    gen = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(3, 512, (n,), generator=gen).tolist()

    return DataCollatorForPreference(pad_token_id=0)(
        [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)} for p, c, r in lengths])


def _two_row_reference(model: Any, batch: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Plain HF forward over TRL's two rows, full logits, log_softmax in the model dtype."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].bool()
    per_token = logits.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1) * mask
    chosen, rejected = per_token.sum(1).chunk(2)
    sft = -per_token.chunk(2)[0][mask.chunk(2)[0]].mean()
    return chosen, rejected, sft


@pytest.mark.parametrize("grouped", [True, False], ids=["pass1-per-length", "pass1-padded"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_float64_split_equals_two_row(attn: str, grouped: bool) -> None:
    import torch

    from conj_train.train.prefix import pair_log_probs

    model = _tiny_random_lm(attn, torch.float64)
    batch = _collated([(20, 7, 3), (13, 1, 9), (25, 5, 5), (9, 12, 2), (17, 4, 6)])  # two rows of 21
    ref = _two_row_reference(model, batch)
    ref_loss = ref[0].sum() - ref[1].sum() + ref[2]
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    out = pair_log_probs(model, batch, head="torch", group_first_pass=grouped)
    # Eager attention takes its softmax in float32 even in a float64 model.
    rtol = 1e-12 if attn == "sdpa" else 1e-8
    for got, want in zip((out.chosen, out.rejected, out.sft_nll), ref, strict=True):
        torch.testing.assert_close(got, want, rtol=rtol, atol=0)
    (out.chosen.sum() - out.rejected.sum() + out.sft_nll).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    # Qwen2's RMSNorm computes in float32 even in a float64 model, so gradients below the final
    # norm carry float32 rounding (~3e-8), forward values none.
    assert _grad_rel_err(ref_grads, grads) < 1e-6


def test_layout_rejects_rows_that_do_not_share_a_prompt() -> None:
    from conj_train.train.prefix_layout import LayoutError, pair_layout

    batch = _collated([(10, 3, 4), (8, 2, 2)])
    ids = batch["input_ids"].clone()
    labels = ids.masked_fill(batch["completion_mask"] == 0, -100)
    layout = pair_layout(ids, batch["attention_mask"], labels)
    assert layout.prompt_lens.tolist() == [10, 8] and layout.max_first == 13 and layout.first_padded
    ids[2, 0] = ids[0, 0] + 1  # rejected row of pair 0 now starts with another token
    with pytest.raises(LayoutError, match="share the prompt"):
        pair_layout(ids, batch["attention_mask"], labels)


def test_mismatched_batch_uses_trl_path_with_same_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    ours, theirs, batches = _compare(tmp_path, tiny_model_dir, _pairs(4))
    batch = dict(batches[0])
    batch["input_ids"] = batch["input_ids"].clone()
    batch["input_ids"][4, 0] = (batch["input_ids"][0, 0] + 1) % 1024
    loss_a, _ = _loss_and_grads(theirs, batch)
    loss_b, _ = _loss_and_grads(ours, batch)
    assert loss_b == loss_a  # the very same code path
    reasons = ours.prefix_sharing_stats()["policy"].reasons
    assert reasons == {"chosen and rejected rows do not share the prompt": 1}


def test_first_batch_check_turns_off_a_wrong_split(tiny_model_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import conj_train.train.prefix as prefix

    real_mask = prefix.rejected_attention_mask

    def prompt_hidden(layout: Any, n_query: int, attn: str, dtype: Any) -> Any:
        # Simulates a model whose cache does not reach attention: rejected tokens miss the prompt.
        mask = real_mask(layout, n_query, attn, dtype).clone()
        mask[..., : layout.max_prompt] = False
        return mask

    monkeypatch.setattr(prefix, "rejected_attention_mask", prompt_hidden)
    ours, theirs, batches = _compare(tmp_path, tiny_model_dir, _pairs(4))
    loss_a, grads_a = _loss_and_grads(theirs, batches[0])
    loss_b, grads_b = _loss_and_grads(ours, batches[0])
    assert loss_b == loss_a and _grad_rel_err(grads_a, grads_b) == 0.0
    stats = ours.prefix_sharing_stats()["policy"]
    assert stats.shared == 0 and any(r.startswith("first batch differs") for r in stats.reasons)


@pytest.mark.parametrize(("change", "reason"), [
    ({"attn_implementation": "flex_attention"}, "attn_implementation"),
    ({"layer_types": ["sliding_attention", "full_attention"], "use_sliding_window": True}, "sliding"),
    ({"final_logit_softcapping": 30.0}, "softcapping"),
])
def test_supports_prefix_sharing_reasons(change: dict[str, Any], reason: str) -> None:
    import torch

    from conj_train.train.prefix import supports_prefix_sharing

    model = _tiny_random_lm("sdpa", torch.float32)
    assert supports_prefix_sharing(model) == (True, "")
    for key, value in change.items():
        if key == "attn_implementation":
            model.config._attn_implementation = value
        else:
            setattr(model.config, key, value)
    ok, message = supports_prefix_sharing(model)
    assert not ok and reason in message and "\n" not in message


def test_group_by_length_trains_with_less_padding(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.train.prefix_layout import padding_share
    from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer, pair_lengths

    rows = _pairs(96, seed=3)
    shares = {}
    for strategy in ("random", "group_by_length"):
        trainer = _trainer(PrefixSharedDPOTrainer, tiny_model_dir, tmp_path / strategy, rows, max_length=None,
                           train_sampling_strategy=strategy, max_steps=2, learning_rate=1e-3)
        data = trainer.train_dataset
        triples = [(len(p), len(c), len(r)) for p, c, r in
                   zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)]
        assert pair_lengths(data) == [p + max(c, r) for p, c, r in triples]
        order = list(trainer._get_train_sampler())
        shares[strategy] = padding_share([[triples[i] for i in order[k:k + 4]] for k in range(0, 96, 4)])
        if strategy == "group_by_length":
            trainer.train()
            assert trainer.state.log_history[0]["loss"] > 0
            assert trainer.prefix_sharing_stats()["policy"].shared >= 2
    # Within a pair, chosen and rejected still pad to the longer judgment: grouping cannot remove that.
    assert shares["group_by_length"] < 0.7 * shares["random"]


def test_padding_share_counts_slots() -> None:
    from conj_train.train.prefix_layout import padding_share

    batch = [(10, 2, 4), (6, 4, 1)]
    # two rows per pair padded to 14 -> 56 slots; real 2*10+2+4 + 2*6+4+1 = 43
    assert padding_share([batch]) == pytest.approx(1 - 43 / 56)
    # pass 1 padded to 12, pass 2 to 4 -> 2*(12+4) = 32 slots; real 16 + 11 = 27
    assert padding_share([batch], "split") == pytest.approx(1 - 27 / 32)


@pytest.mark.slow
def test_zero3_matches_trl(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"  # file-backed: precompute under 2 processes needs a shared cache
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in _pairs(16)))
    out = tmp_path / "result.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs" / "zero3.yaml"), "--num_processes", "2", __file__,
           str(tiny_model_dir), str(data), str(tmp_path / "run"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["zero_stage"] == 3
    for variant in ("", "_precompute"):
        trl, ours = result["trl" + variant], result["ours" + variant]
        assert len(trl) == len(ours) == 3 and len(set(trl)) == 3  # three steps that moved the policy
        assert ours == pytest.approx(trl, rel=RTOL)
    assert result["shared"] == {"policy": 3, "reference": 3}
    # 16 pairs / (2 processes x 2) = 4 precompute batches (reference = the policy's engine) + 3 steps
    assert result["shared_precompute"] == {"policy": 7}


def _zero3_main(model_dir: str, data: str, run_dir: str, out: str) -> None:
    """One process of the ZeRO-3 check: TRL's trainer and ours, 3 SGD steps each; rank 0 writes."""
    import importlib

    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # skip the shm-op JIT build
    import torch.distributed as dist
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer

    warnings.filterwarnings("ignore")
    result: dict[str, Any] = {}
    for variant, extra in (("", {}), ("_precompute", {"precompute_ref_log_probs": True})):
        for name, cls in (("trl", DPOTrainer), ("ours", PrefixSharedDPOTrainer)):
            run = Path(run_dir) / (name + variant)
            config = _config(run, use_cpu=False, ddp_backend="gloo", per_device_train_batch_size=2,
                             max_steps=3, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant",
                             **extra)
            # Own datasets cache per trainer, so one cannot reuse the other's precomputed log-probs.
            dataset = load_dataset("json", data_files=data, split="train", cache_dir=str(run / "cache"))
            trainer = cls(model=model_dir, args=config, train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(model_dir))
            trainer.train()
            result[name + variant] = [row["loss"] for row in trainer.state.log_history if "loss" in row]
            if name == "ours":
                result["shared" + variant] = {k: v.shared for k, v in trainer.prefix_sharing_stats().items()}
            result["zero_stage"] = trainer.accelerator.state.deepspeed_plugin.zero_stage
    result["world_size"] = dist.get_world_size()
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    _zero3_main(*sys.argv[1:5])


def test_cache_argument_follows_the_decoders_name() -> None:
    """transformers 5.24 renamed the decoder's ``past_key_values`` to ``cache``; sharing takes either."""
    import torch

    from conj_train.train.prefix_cache import cache_argument

    class New(torch.nn.Module):
        def forward(self, input_ids: Any = None, cache: Any = None, use_cache: Any = None) -> None:
            return None

    class Old(torch.nn.Module):
        def forward(self, input_ids: Any = None, past_key_values: Any = None, use_cache: Any = None) -> None:
            return None

    class Neither(torch.nn.Module):
        def forward(self, input_ids: Any = None) -> None:
            return None

    assert cache_argument(New()) == "cache"
    assert cache_argument(Old()) == "past_key_values"
    assert cache_argument(Neither()) is None
