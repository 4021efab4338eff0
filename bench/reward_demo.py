"""Does a policy trained with the demo's Con-J judge as its reward win more often? (docs/reward.md)

After `conj demo` (the judge in <demo>/train, the toy data in <demo>/data):

    OMP_NUM_THREADS=1 python bench/reward_demo.py --demo runs/demo [--seed S]

1. the policy (<demo>/policy, kept for recipes/demo/grpo.yaml): the demo's tiny model after a short SFT on the toy answers, half of them ending in a
   fruit (:func:`conj_train.pipeline.demo.build_demo_policy`);
2. GRPO on it with recipes/demo/grpo.yaml (scripts/grpo_judge.py: the judge's round-robin win rate
   within each group of 4, both orders), a checkpoint every ``--every`` steps;
3. each checkpoint answers ``--samples`` held-out prompts (sampled, T 1.0, as in training); the judge
   compares each answer with the SFT policy's answer to the same prompt, in both orders: the judged win
   rate vs the start (``JudgeReward(pairing="reference")``), with the share of answers that end in a
   fruit (the rule the judge learned) beside it.

Prints a Markdown table and writes it with the settings to ``<out>/results.json`` (default out:
``<demo>/reward-bench-s<seed>``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRUITS = ("apple", "banana", "orange", "pear")


def sample_answers(model_dir: Path, n: int, seed: int, max_new_tokens: int = 16) -> list[str]:
    """``n`` sampled answers to the demo's prompt (T 1.0, no top-p / top-k: GRPO's defaults)."""
    import torch
    from transformers import AutoModelForCausalLM

    from conj_train.tokens import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = tok(["Name a fruit."] * n, return_tensors="pt")
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    return [tok.decode(o[ids["input_ids"].shape[1]:], skip_special_tokens=True) for o in out]


def ends_in_fruit(answer: str) -> bool:
    """The toy rule: the answer's last word is a fruit."""
    words = answer.strip().rstrip(".").split()
    return bool(words) and words[-1].strip(":.,").lower() in FRUITS


def main() -> None:
    """Build the policy, train it with GRPO on the judge's reward, measure each checkpoint."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished `conj demo` folder")
    ap.add_argument("--out", default=None, help="default: <demo>/reward-bench-s<seed>")
    ap.add_argument("--steps", type=int, default=90)
    ap.add_argument("--every", type=int, default=30, help="checkpoint interval (steps)")
    ap.add_argument("--samples", type=int, default=256, help="answers per checkpoint")
    ap.add_argument("--policy-rows", type=int, default=600, help="toy rows of the policy's SFT")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="more recipe overrides: key=value")
    args = ap.parse_args()

    import torch

    from conj_train.inference.judge import Judge
    from conj_train.inference.judge_reward import JudgeReward
    from conj_train.pipeline.demo import build_demo_policy

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    demo = Path(args.demo)
    out = Path(args.out or demo / f"reward-bench-s{args.seed}")
    rows = [json.loads(line) for line in (demo / "data/train.jsonl").read_text().splitlines()]
    start = time.time()
    policy = build_demo_policy(demo / "policy", demo / "tiny-model", rows[: args.policy_rows], seed=args.seed)
    t_policy = time.time() - start

    spec = importlib.util.spec_from_file_location("grpo_judge", REPO / "scripts/grpo_judge.py")
    script = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(script)  # type: ignore[union-attr]
    extra = [f"--{kv.split('=', 1)[0]}={kv.split('=', 1)[1]}" for kv in args.set]
    start = time.time()
    trainer, reward = script.run([
        "--config", str(REPO / "recipes/demo/grpo.yaml"), "--dataset_name", str(demo / "data/train.jsonl"),
        "--model_name_or_path", str(policy), "--judge_model", str(demo / "train"),
        "--output_dir", str(out / "grpo"), "--max_steps", str(args.steps), "--seed", str(args.seed),
        "--save_strategy", "steps", "--save_steps", str(args.every), "--save_only_model", "true",
        *extra,
    ])
    t_grpo = time.time() - start
    # The group mean is 0.5 by construction (module docstring of judge_reward); the spread is the signal.
    train_std = [h["rewards/conj_judge_group/std"] for h in trainer.state.log_history
                 if "rewards/conj_judge_group/std" in h]

    judge = Judge.from_pretrained(str(demo / "train"), max_new_tokens=32)
    vs_start = JudgeReward(judge, pairing="reference")
    start_answers = sample_answers(policy, args.samples, seed=args.seed + 1)
    saved = sorted((int(p.name.split("-")[1]), p) for p in (out / "grpo").glob("checkpoint-*"))
    points = [(0, policy), *saved]
    table = []
    for step, path in points:
        answers = sample_answers(path, args.samples, seed=args.seed + 2)
        wins = vs_start(["Name a fruit."] * len(answers), answers, reference=start_answers)
        scored = [w for w in wins if w is not None]
        table.append({"step": step, "win_rate_vs_start": sum(scored) / len(scored),
                      "fruit_share": sum(map(ends_in_fruit, answers)) / len(answers),
                      "examples": answers[:4]})
    load = os.getloadavg()
    lines = ["| GRPO step | judged win rate vs the SFT policy | answers ending in a fruit |", "|---|---|---|"]
    lines += [f"| {r['step']} | {100 * r['win_rate_vs_start']:.1f}% | {100 * r['fruit_share']:.1f}% |"
              for r in table]
    text = "\n".join(lines)
    blocks = [train_std[k : k + args.every] for k in range(0, len(train_std), args.every)]
    spread = ", ".join(f"{sum(b) / len(b):.3f}" for b in blocks)
    print(text)
    print(f"training reward std within the batch, mean per {args.every} steps: {spread}")
    print(f"judge: {reward.stats}; eval unparsed {vs_start.stats.unparsed}/{vs_start.stats.judgments}")
    print(f"policy SFT {t_policy:.0f} s, GRPO {t_grpo:.0f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    (out / "results.json").write_text(json.dumps({
        "args": vars(args), "table": table, "train_reward_std": train_std,
        "judge_stats": vars(reward.stats), "eval_stats": vars(vs_start.stats),
        "seconds": {"policy": t_policy, "grpo": t_grpo}, "loadavg": load}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
