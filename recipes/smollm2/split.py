"""Split hh-rlhf harmless (test file, 2,308 usable pairs) by pair id into train and held-out JSONL.

    python recipes/smollm2/split.py data/hh-rlhf-harmless-base-test.jsonl.gz runs/smollm2/data

A pair goes to held-out when sha256(id) mod 100 < --heldout-percent (default 30), so the split does not
depend on file order and the same ids land on the same side on every machine. ``--max-chars`` keeps
pairs whose question + context + both answers fit that many characters (0 = all): on CPUs short pairs
keep the prompts (and so the run) small; the study states the cap it used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from conj_train.data import load_preferences
from conj_train.io import write_jsonl


def pair_chars(r: dict) -> int:
    """Characters of everything the judge prompt shows of a pair."""
    return len(r["question"]) + len(r["chosen"]) + len(r["rejected"]) + len(json.dumps(r.get("context") or []))


def conversational(r: dict) -> dict:
    """A canonical record as a TRL conversational row (every reader loads it back to the same id)."""
    prompt = [*(r.get("context") or []), {"role": "user", "content": r["question"]}]
    return {"id": r["id"], "prompt": prompt, "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}]}


def main() -> None:
    """Write ``train.jsonl`` and ``heldout.jsonl`` and print their sizes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("output_dir")
    ap.add_argument("--heldout-percent", type=int, default=30)
    ap.add_argument("--max-chars", type=int, default=0)
    a = ap.parse_args()
    records = load_preferences(a.source).records
    keep = [r for r in records if not a.max_chars or pair_chars(r) <= a.max_chars]
    held = [r for r in keep if int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 100 < a.heldout_percent]
    held_ids = {r["id"] for r in held}
    train = [r for r in keep if r["id"] not in held_ids]
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", map(conversational, train))
    write_jsonl(out / "heldout.jsonl", map(conversational, held))
    print(f"{len(records)} pairs, {len(keep)} within {a.max_chars or 'any'} chars: "
          f"train {len(train)}, held-out {len(held)} -> {out}")


if __name__ == "__main__":
    main()
