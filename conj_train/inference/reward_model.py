"""A scalar reward model (sequence-classification head, one label) scoring answers, and as a judge.

The one place answers are scored with a reward model: the evaluation stage compares it with the
generative judge through :meth:`RewardModel.compare`, and a model trained by ``conj train-rm``
(:mod:`conj_train.train.reward`) scores its preference records with :meth:`RewardModel.score_records`.

    from conj_train.inference.reward_model import RewardModel

    rm = RewardModel.from_pretrained("path/to/rm")
    r1, r2 = rm.score_pair("What is 2+2?", "4", "5")            # higher is better
    v = rm.compare("What is 2+2?", "4", "5")                     # Verdict, P(1 better) = sigmoid(r1 - r2)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.inference.judge import Verdict


def detect_model_kind(path: str, trust_remote_code: bool = False) -> str:
    """``rm`` for a sequence-classification checkpoint (``config.architectures``), else ``judge``."""
    local = Path(path) / "config.json"
    if local.is_file():
        archs = json.loads(local.read_text(encoding="utf-8")).get("architectures") or []
    else:
        from transformers import AutoConfig

        try:
            archs = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).architectures or []
        except (OSError, ValueError) as e:
            raise ConjError(f"cannot read the model config of {path}: {str(e).splitlines()[0]}") from e
    return "rm" if any(a.endswith("ForSequenceClassification") for a in archs) else "judge"


def sigmoid(x: float) -> float:
    """Numerically safe logistic function."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class RewardModel:
    """A scalar reward model (sequence-classification head, one label) as a scorer and pairwise judge.

    Each answer is scored alone as the chat ``[earlier turns..., user: question, assistant: answer]``
    through the tokenizer's chat template, tokenized as TRL's ``RewardTrainer`` does (no generation
    prompt); the score is the head's output at the last token. The higher score wins and P(answer 1
    better) = sigmoid(r1 - r2) (Bradley-Terry). A conversation longer than the model's context gets no
    score (None) rather than a truncated one.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        # Without a pad token the head cannot find each row's last token in a padded batch.
        self.batch_size = batch_size if model.config.pad_token_id is not None else 1
        self.max_length = int(
            getattr(model.config, "max_position_embeddings", 0) or tokenizer.model_max_length
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "auto",
        device: str | None = None,
        threads: int | None = None,
        trust_remote_code: bool = False,
        batch_size: int = 8,
    ) -> RewardModel:
        """Load a sequence-classification checkpoint and its tokenizer (which needs a chat template)."""
        import torch
        from transformers import AutoModelForSequenceClassification

        from conj_train.inference.loading import load_model
        from conj_train.tokens import load_tokenizer

        path = str(path)
        if threads:
            torch.set_num_threads(threads)
        tok = load_tokenizer(path, trust_remote_code)
        model = load_model(AutoModelForSequenceClassification, path, what="a sequence-classification model",
                           dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        if model.config.num_labels != 1:
            raise ConjError(f"{path}: a reward model needs num_labels=1, found {model.config.num_labels}")
        return cls(model, tok, batch_size=batch_size)

    def encode_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Token ids of one scored conversation (ending with the assistant answer); its texts are data
        (special-token strings tokenize as text, :func:`conj_train.prompts.chat.plain_messages`)."""
        from conj_train.prompts.chat import plain_messages

        out = self.tokenizer.apply_chat_template(plain_messages(self.tokenizer, messages), tokenize=True,
                                                 return_dict=True)
        return list(out["input_ids"])

    def encode(self, question: str, answer: str, context: Sequence[Mapping[str, Any]] = ()) -> list[int]:
        """Token ids of ``answer`` to ``question`` after the earlier turns ``context``."""
        return self.encode_messages(
            [*context, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        )

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> list[float | None]:
        """The reward of each token sequence (None when longer than the context)."""
        import torch

        scores: list[float | None] = [None] * len(sequences)
        todo = sorted(
            (i for i, s in enumerate(sequences) if 0 < len(s) <= self.max_length),
            key=lambda i: len(sequences[i]),
        )
        pad = self.model.config.pad_token_id if self.model.config.pad_token_id is not None else 0
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(sequences[i])] = torch.tensor(list(sequences[i]), dtype=torch.long)
                mask[row, : len(sequences[i])] = 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device)
                ).logits
            for row, i in enumerate(batch):
                scores[i] = float(logits[row, 0])
        return scores

    def score(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[float | None]:
        """One reward per conversation (each ending with the assistant answer to score)."""
        return self.score_ids([self.encode_messages(c) for c in conversations])

    def score_pair(
        self, question: str, answer_1: str, answer_2: str, context: Sequence[Mapping[str, Any]] = ()
    ) -> tuple[float | None, float | None]:
        """Rewards of two answers to the same question (and optional earlier turns)."""
        r1, r2 = self.score_ids(
            [self.encode(question, answer_1, context), self.encode(question, answer_2, context)]
        )
        return r1, r2

    def compare(
        self, question: str, answer_1: str, answer_2: str, *, context: Sequence[Mapping[str, Any]] = ()
    ) -> Verdict:
        """Which answer scores higher; ``raw`` holds both rewards as text."""
        r1, r2 = self.score_pair(question, answer_1, answer_2, context)
        if r1 is None or r2 is None:
            return Verdict(None, None, None, f"{r1} {r2}")
        better = 1 if r1 > r2 else 2 if r2 > r1 else None
        return Verdict(better, None, sigmoid(r1 - r2), f"{r1} {r2}")

    def score_records(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """For canonical preference records: pair id, both rewards and whether chosen scored higher."""
        recs = list(records)
        seqs = []
        for r in recs:
            context = r.get("context") or ()
            seqs += [self.encode(r["question"], r["chosen"], context),
                     self.encode(r["question"], r["rejected"], context)]
        scores = self.score_ids(seqs)
        out = []
        for i, r in enumerate(recs):
            chosen, rejected = scores[2 * i], scores[2 * i + 1]
            correct = chosen is not None and rejected is not None and chosen > rejected
            out.append({"pair_id": r["id"], "chosen_score": chosen, "rejected_score": rejected,
                        "correct": correct})
        return out
