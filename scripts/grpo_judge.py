"""A Con-J judge as the reward of TRL's GRPOTrainer: the recipe format of TRL's ``scripts/grpo.py``.

    python scripts/grpo_judge.py --config recipes/demo/grpo.yaml [--key value ...]
    accelerate launch scripts/grpo_judge.py --config R.yaml          # several processes

The recipe holds the fields of :class:`conj_train.inference.judge_reward.JudgeRewardArguments` (prompts, judge,
pairing), TRL's ``GRPOConfig`` and ``ModelConfig`` (the policy). The reward is
:class:`conj_train.inference.judge_reward.JudgeReward` on the recipe's judge
(:func:`conj_train.inference.judge_reward.judge_from_arguments`: ``Judge.from_pretrained(judge_model)``
with the ``judge_*`` fields; ``judge_batch_tokens: 65536`` packs the hf judge's prompts); its
``num_generations`` is the trainer's. The judge runs in every training process, on the policy's device
when there is one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError


def load_prompts(name: str, config: str | None, split: str) -> Any:
    """The prompt data set: a JSON(L) file, a ``save_to_disk`` folder, or a Hub id."""
    import datasets

    path = Path(name)
    if path.is_file():
        return datasets.load_dataset("json", data_files=str(path), split="train")
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        data = datasets.load_from_disk(str(path))
        return data[split] if isinstance(data, datasets.DatasetDict) else data
    return datasets.load_dataset(name, config, split=split)


def run(argv: list[str] | None = None) -> tuple[Any, Any]:
    """Parse the recipe, train the policy with the judge's reward, save it; returns (trainer, reward)."""
    from trl import GRPOTrainer

    from conj_train.inference.judge_reward import JudgeReward, judge_from_arguments, parse_grpo_args

    script_args, training_args, model_args = parse_grpo_args(argv)
    if not script_args.judge_model or not script_args.dataset_name:
        raise ConjError("the recipe needs judge_model and dataset_name")
    if not model_args.model_name_or_path:
        raise ConjError("the recipe needs model_name_or_path (the policy)")
    prompts = load_prompts(script_args.dataset_name, script_args.dataset_config,
                           script_args.dataset_train_split)
    judge = judge_from_arguments(script_args)
    reward = JudgeReward(
        judge,
        pairing=script_args.pairing,
        num_generations=training_args.num_generations,
        reference_column=script_args.reference_column,
        score=script_args.score,
        both_orders=script_args.both_orders,
        fallback=script_args.fallback,
    )
    trainer = GRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward,
        args=training_args,
        train_dataset=prompts,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return trainer, reward


def main(argv: list[str] | None = None) -> int:
    """Run :func:`run`; prints the reward's counts, returns the exit code."""
    try:
        _, reward = run(argv)
    except ConjError as e:
        print(f"grpo_judge: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        s = reward.stats
        print(f"judge reward: {s.calls} calls, {s.completions} completions, {s.judgments} judgments, "
              f"{s.unparsed} without a verdict, {s.identical} identical pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
