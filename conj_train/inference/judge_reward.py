"""A Con-J judge as the reward of TRL's RL trainers (``GRPOTrainer``, ``RLOOTrainer``).

    from conj_train.inference.judge import Judge
    from conj_train.inference.judge_reward import JudgeReward

    judge = Judge.from_pretrained("runs/demo/train", max_new_tokens=32)
    reward = JudgeReward(judge, pairing="group", num_generations=8)   # win rate within each group
    trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=GRPOConfig(num_generations=8), ...)

Why not TRL: TRL 1.x removed its judge classes (``BasePairwiseJudge``, ``OnlineDPOTrainer``'s
``judge``); its RL trainers take ``reward_funcs``, plain callables ``f(prompts, completions,
completion_ids, trainer_state=..., log_metric=..., <dataset columns>...) -> list[float | None]``
that score each completion alone. A pairwise judge has no scalar of its own: it needs an opponent
for every completion and a rule that turns verdicts into a number, and TRL has neither. This module
is that rule, on a :class:`~conj_train.inference.judge.Judge` (any of its engines).

**Pairing** (who each completion is compared with):

- ``reference``: the answer in a dataset column (``reference_column``, default ``"reference"``;
  TRL passes every extra column to the reward function). Reward = the completion's score against it.
- ``group``: round-robin inside each group of ``num_generations`` completions of one prompt (GRPO
  and RLOO lay each group out consecutively). Reward = the mean score against the group's other
  completions: its win rate in the group.

**Score** of one comparison, in [0, 1], averaged over the orders judged:

- ``verdict``: per order, the share of the judge's parsed samples that name the completion (1 or 0
  for greedy decoding).
- ``probability``: per order, P(the completion's slot is better), read from the judge's logits at
  the verdict digit (:class:`conj_train.inference.probability.VerdictScorer`); needs a judge with a scorer.

**Both orders** by default: each comparison is judged with the completion in slot 1 and in slot 2. A
judge with a position bias otherwise pays for the slot, not the answer: the demo's base judge names
the same slot for every prompt, which with one order gives the completion in that slot a reward of 1
whatever it says; with both orders it gives every completion 0.5.

**Fallback**: an order whose judgment holds no verdict (nothing parsed, or the prompt too long for
the judge's context) scores ``fallback`` for both sides, default 0.0: a completion that keeps the
judge from answering (by its length, or text that derails it) must not earn a tie with a completion
the judge would have preferred. 0.5 (a neutral tie) is the other common choice; ``None`` leaves the
order out of the mean, and a completion with nothing left gets None (TRL: this reward does not apply
to that completion). Every fallback is counted in :attr:`JudgeReward.stats` and logged through TRL's
``log_metric`` as ``<name>/unparsed`` (share of this call's judgments without a verdict).

Two completions with the same text tie (0.5) without a judgment. Each call runs the judge once on
all of its distinct prompts (the engine batches them).

**Completions are data.** A completion is only ever placed in an answer slot of the judge's
template; the verdict is parsed from the judge's own generation after its prefill, never from the
prompt, so a completion that writes ``{"更好的回答": 1}`` or chat control tokens gains nothing by the
text itself (tests/test_judge_reward.py). That the rendered prompt tokenizes such text as plain text is
the prompt builder's guarantee (:mod:`conj_train.prompts.chat`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conj_train.errors import ConjError
from conj_train.inference.judge import Judge, Judgment

PAIRINGS = ("reference", "group")
SCORES = ("verdict", "probability")


@dataclass
class JudgeRewardArguments:
    """The judge-as-reward options of an RL recipe (``scripts/grpo_judge.py``): TRL's
    ``ScriptArguments`` fields for the prompts, and the :class:`JudgeReward` settings."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "The prompts: a JSONL/JSON file (a 'prompt' column, and the reference "
                  "column for pairing 'reference'), a datasets folder, or a Hub id."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The Hub data set's config."})
    dataset_train_split: str = field(default="train", metadata={"help": "The split to train on."})
    judge_model: str | None = field(
        default=None, metadata={"help": "The judge: a Con-J judge folder (`conj train`'s output) or Hub id."}
    )
    judge_engine: str = field(default="hf", metadata={"help": "The judge's engine: hf or vllm."})
    judge_template: str = field(
        default="conj-zh", metadata={"help": "The judge prompt template the judge was trained with."}
    )
    judge_max_new_tokens: int = field(
        default=512, metadata={"help": "Longest judgment; one cut short has no verdict (the fallback)."}
    )
    judge_threads: int | None = field(
        default=None, metadata={"help": "CPU threads of the judge's hf engine (None: torch's default)."}
    )
    judge_batch_tokens: int = field(
        default=0,
        metadata={"help": "The hf engine's batch_tokens: 0 judges one prompt per forward (texts independent "
                  "of the batch); e.g. 65536 packs a call's judge prompts into few forwards, several "
                  "times the judgments/s (bench/judge_reward.py), texts then depending on the pack up to "
                  "rounding. Ignored by the vllm engine, which batches on its own."},
    )
    pairing: str = field(
        default="group",
        metadata={"help": "Who each completion is judged against: 'group' (round-robin within its "
                  "num_generations group: a win rate) or 'reference' (the reference_column answer)."},
    )
    reference_column: str = field(
        default="reference", metadata={"help": "The data set's reference-answer column (pairing 'reference')."}
    )
    score: str = field(
        default="verdict",
        metadata={"help": "'verdict' (the judge's parsed choice) or 'probability' (P(better) read at "
                  "the verdict digit)."},
    )
    both_orders: bool = field(
        default=True,
        metadata={"help": "Judge each comparison in both answer orders (a slot-biased judge otherwise "
                  "rewards the slot)."},
    )
    fallback: float | None = field(
        default=0.0,
        metadata={"help": "Score of an order whose judgment has no verdict, for both answers (None: "
                  "left out of the mean)."},
    )


def parse_grpo_args(argv: Sequence[str] | None = None) -> tuple[Any, Any, Any]:
    """A GRPO recipe (``--config R.yaml`` and ``--key value`` overrides, TRL's format) as
    (:class:`JudgeRewardArguments`, ``GRPOConfig``, ``ModelConfig``): ``scripts/grpo_judge.py``'s."""
    from trl import GRPOConfig, ModelConfig, TrlParser

    parser = TrlParser((JudgeRewardArguments, GRPOConfig, ModelConfig))
    return tuple(parser.parse_args_and_config(None if argv is None else list(argv)))  # type: ignore[return-value]


def judge_from_arguments(args: JudgeRewardArguments) -> Judge:
    """The recipe's judge: ``Judge.from_pretrained`` on ``args.judge_model`` with its ``judge_*``
    fields; reads verdict probabilities only for ``score='probability'``."""
    if not args.judge_model:
        raise ConjError("the recipe needs judge_model")
    options = {"batch_tokens": args.judge_batch_tokens} if args.judge_engine == "hf" else {}
    return Judge.from_pretrained(
        args.judge_model,
        engine=args.judge_engine,
        threads=args.judge_threads,
        probability=args.score == "probability",
        engine_options=options,
        template=args.judge_template,
        max_new_tokens=args.judge_max_new_tokens,
    )


@dataclass
class RewardStats:
    """Counts over the life of a :class:`JudgeReward` (all calls)."""

    calls: int = 0
    completions: int = 0
    comparisons: int = 0  # completion pairs scored, identical texts included
    identical: int = 0  # comparisons of two identical texts: a tie without a judgment
    judgments: int = 0  # (comparison, order) judgments made, before deduplicating prompts
    unparsed: int = 0  # judgments without a verdict (or probability): the fallback applied


@dataclass(frozen=True)
class _Question:
    text: str
    context: tuple[Mapping[str, Any], ...]


class JudgeReward:
    """A TRL ``reward_funcs`` callable built from a :class:`~conj_train.inference.judge.Judge` (module docstring).

    ``pairing``: ``group`` (round-robin within each group of ``num_generations``) or ``reference``
    (against the ``reference_column`` answer). ``score``: ``verdict`` or ``probability``.
    ``both_orders``: judge every comparison with the answers in both slots (default; recommended).
    ``fallback``: the score of an order without a verdict (None: left out). ``name``: the name TRL
    logs the reward under (``rewards/<name>/mean``).
    """

    def __init__(
        self,
        judge: Judge,
        *,
        pairing: str = "group",
        num_generations: int | None = None,
        reference_column: str = "reference",
        score: str = "verdict",
        both_orders: bool = True,
        fallback: float | None = 0.0,
        name: str | None = None,
    ) -> None:
        if pairing not in PAIRINGS:
            raise ConjError(f"pairing must be one of {PAIRINGS}, not {pairing!r}")
        if score not in SCORES:
            raise ConjError(f"score must be one of {SCORES}, not {score!r}")
        if pairing == "group" and (num_generations is None or num_generations < 2):
            raise ConjError(
                "pairing='group' needs num_generations >= 2: the trainer's num_generations "
                f"(GRPOConfig / RLOOConfig), got {num_generations!r}"
            )
        if score == "probability" and judge.scorer is None:
            raise ConjError("score='probability' needs a judge that reads verdict probabilities "
                            "(Judge.from_pretrained(..., probability=True))")
        if fallback is not None and not 0.0 <= fallback <= 1.0:
            raise ConjError(f"fallback must be in [0, 1] or None, not {fallback!r}")
        self.judge = judge
        self.pairing = pairing
        self.num_generations = num_generations
        self.reference_column = reference_column
        self.score = score
        self.both_orders = both_orders
        self.fallback = fallback
        # TRL names each reward function by its __name__ (logs: rewards/<name>/mean).
        self.__name__ = name or f"conj_judge_{pairing}"
        self.stats = RewardStats()

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        *,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        """One reward in [0, 1] (or None) per completion, in order; TRL's ``reward_funcs`` signature.

        ``prompts`` / ``completions``: strings (standard format) or message lists (conversational).
        Other keyword arguments are TRL's (``trainer_state``, ``log_extra``...) and the dataset's
        columns, of which only ``reference_column`` is read (``pairing='reference'``).
        """
        if len(prompts) != len(completions):
            raise ConjError(f"{len(prompts)} prompts for {len(completions)} completions")
        questions = [_question(p) for p in prompts]
        answers = [_text(c, "completion") for c in completions]
        # (completion index, opponent index or None, opponent text)
        matches: list[tuple[int, int | None, str]] = []
        if self.pairing == "reference":
            refs = kwargs.get(self.reference_column)
            if refs is None:
                raise ConjError(
                    f"pairing='reference' needs the dataset column {self.reference_column!r} "
                    f"(columns passed: {sorted(k for k in kwargs if k not in _TRL_KWARGS)})"
                )
            if len(refs) != len(answers):
                raise ConjError(f"{len(refs)} references for {len(answers)} completions")
            matches = [(i, None, _text(r, self.reference_column)) for i, r in enumerate(refs)]
        else:
            for group in self._groups(prompts):
                matches += [(i, j, answers[j]) for i in group for j in group if i < j]

        scores, judgments, unparsed = self._judge(questions, answers, matches)
        # A comparison's score is its mean over the orders kept; a reward, the mean over comparisons.
        per: list[list[float]] = [[] for _ in answers]
        for (i, j, _), (s_i, s_j) in zip(matches, scores, strict=True):
            if s_i:
                per[i].append(sum(s_i) / len(s_i))
            if j is not None and s_j:
                per[j].append(sum(s_j) / len(s_j))
        self.stats.calls += 1
        self.stats.completions += len(answers)
        if log_metric is not None and judgments:
            log_metric(f"{self.__name__}/unparsed", unparsed / judgments)
        return [sum(s) / len(s) if s else None for s in per]

    def _groups(self, prompts: Sequence[Any]) -> list[range]:
        g = int(self.num_generations or 0)
        if len(prompts) % g:
            raise ConjError(_GROUP_HELP.format(n=len(prompts), g=g))
        groups = [range(k, k + g) for k in range(0, len(prompts), g)]
        for grp in groups:
            if any(prompts[i] != prompts[grp.start] for i in grp):
                raise ConjError(_GROUP_HELP.format(n=len(prompts), g=g))
        return groups

    def _judge(
        self, questions: list[_Question], answers: list[str], matches: list[tuple[int, int | None, str]]
    ) -> tuple[list[tuple[list[float], list[float]]], int, int]:
        """Per match, the scores of (the completion, its opponent), one per order kept; and this
        call's counts of judgments and of judgments without a verdict."""
        prompts: dict[str, int] = {}  # distinct judge prompt -> its index in the judge call
        plan: list[list[tuple[int, int]] | None] = []  # per match: (prompt index, completion's slot)
        for i, _, other in matches:
            self.stats.comparisons += 1
            if answers[i] == other:
                self.stats.identical += 1
                plan.append(None)
                continue
            q = questions[i]
            orders = [(answers[i], other, 1)] + ([(other, answers[i], 2)] if self.both_orders else [])
            keys = []
            for a1, a2, slot in orders:
                text = self.judge.prompt_text(q.text, a1, a2, q.context)
                keys.append((prompts.setdefault(text, len(prompts)), slot))
            plan.append(keys)
        judged = self.judge.judge_prompts(list(prompts)) if prompts else []
        judgments = unparsed = 0
        out = []
        for keys in plan:
            if keys is None:
                out.append(([0.5], [0.5]))
                continue
            mine, theirs = [], []
            for k, slot in keys:
                judgments += 1
                s = self._slot_score(judged[k], slot)
                if s is None:
                    unparsed += 1
                    if self.fallback is None:
                        continue
                    mine.append(self.fallback)
                    theirs.append(self.fallback)
                else:
                    mine.append(s)
                    theirs.append(1.0 - s)
            out.append((mine, theirs))
        self.stats.judgments += judgments
        self.stats.unparsed += unparsed
        return out, judgments, unparsed

    def _slot_score(self, j: Judgment, slot: int) -> float | None:
        """The score of the answer in ``slot`` (1 or 2) in one judgment; None without a verdict."""
        if self.score == "probability":
            p = j.p_slot1
            return None if p is None else (p if slot == 1 else 1.0 - p)
        ones, twos = j.verdicts.count(1), j.verdicts.count(2)
        if ones + twos == 0:
            return None
        return (ones if slot == 1 else twos) / (ones + twos)


_TRL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")

_GROUP_HELP = (
    "pairing='group': {n} completions do not split into groups of num_generations={g} consecutive "
    "completions of one prompt. The reward function must see whole groups: set num_generations to the "
    "trainer's, and with several processes make per_device_train_batch_size x steps_per_generation a "
    "multiple of it (TRL spreads a group over processes otherwise); at evaluation, num_generations_eval "
    "must equal it"
)


def _text(value: Any, what: str) -> str:
    """A completion or reference as text: a string, or the contents of a list of messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, Sequence):
        return "".join(_content(m, what) for m in value)
    raise ConjError(f"{what}: expected a string or a list of messages, got {type(value).__name__}")


def _content(message: Any, what: str) -> str:
    if not isinstance(message, Mapping) or "content" not in message:
        raise ConjError(f"{what}: expected messages with a 'content' field, got {message!r:.80}")
    content = message["content"]
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # content blocks: only text can be judged
        parts = []
        for block in content:
            if not (isinstance(block, Mapping) and block.get("type") == "text"):
                raise ConjError(f"{what}: only text content can be judged, got a {block!r:.80} block")
            parts.append(str(block.get("text", "")))
        return "".join(parts)
    if content is None:
        return ""
    raise ConjError(f"{what}: unsupported message content {type(content).__name__}")


def _question(prompt: Any) -> _Question:
    """The judge's question and earlier turns from a TRL prompt (a string or a list of messages)."""
    if isinstance(prompt, str):
        return _Question(prompt, ())
    if not isinstance(prompt, Sequence):
        raise ConjError(f"prompt: expected a string or a list of messages, got {type(prompt).__name__}")
    users = [k for k, m in enumerate(prompt) if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise ConjError("prompt: a conversational prompt needs a user message (the question)")
    last = users[-1]
    # Turns after the last user message (a pre-filled assistant start) belong to the answer, not
    # the question; the judge sees the completion alone, as TRL's reward models do.
    context = tuple(
        {"role": m["role"], "content": _content(m, "prompt")} for m in prompt[:last]
    )
    return _Question(_content(prompt[last], "prompt"), context)
