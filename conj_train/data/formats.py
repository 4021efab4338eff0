"""One adapter per preference-data format, plus auto-detection from field names.

An adapter is a small function ``row, options -> Draft`` (raising ``Skip``) registered with
:func:`register`; the order of registration is the order auto-detection tries them, most specific
first. Adding a format is one decorated function. A tie label gives a ``Draft(tie=True)`` (training
ingestion skips it, evaluation keeps it); a row holding several pairs (RM-Bench) gives a list of drafts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conj_train.data.records import Draft, Skip
from conj_train.errors import ConjError

FIELD_MAP_KEYS = ("prompt_field", "chosen_field", "rejected_field", "context_field", "source_field")


@dataclass(frozen=True)
class Options:
    """Per-load settings that some adapters read."""

    pku_label: str = "better"
    field_map: dict[str, str] | None = None


Detector = Callable[[set[str], list[dict]], bool]
Converter = Callable[[dict, Options], "Draft | list[Draft]"]


@dataclass(frozen=True)
class Format:
    """A registered format: its converter and (optional) auto-detection predicate."""

    name: str
    convert: Converter
    detect: Detector | None


FORMATS: dict[str, Format] = {}


def register(name: str, detect: Detector | None = None) -> Callable[[Converter], Converter]:
    """Decorator adding a converter to :data:`FORMATS`."""

    def wrap(fn: Converter) -> Converter:
        FORMATS[name] = Format(name, fn, detect)
        return fn

    return wrap


def _need(row: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise Skip("missing_field", ", ".join(missing))


def _label(value: Any, allowed: tuple[int, ...]) -> int:
    """An integer label given as int, whole float (``1.0``: pandas writes integer columns with a
    missing value as floats) or digit string; bools and anything else are invalid."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise Skip("invalid_label", repr(value)[:40])
    return value


def _first(sample: list[dict], key: str) -> Any:
    return next((r[key] for r in sample if r.get(key) is not None), None)


def _has(*keys: str) -> Detector:
    return lambda keys_seen, sample: set(keys) <= keys_seen


def _types(**kinds: type) -> Detector:
    """Detector: every named field is present and (first non-null value) of the given type."""
    return lambda keys_seen, sample: all(isinstance(_first(sample, k), t) for k, t in kinds.items())


def _pick(label: int, first: Any, second: Any) -> tuple[Any, Any]:
    return (first, second) if label == 1 else (second, first)


def _last_message(conv: Any) -> Any:
    if not isinstance(conv, list):
        return conv  # non-text: the shared checks report it
    if not conv:
        raise Skip("missing_field", "empty message list")
    if not isinstance(conv[-1], dict):
        # A list of plain answers (RewardBench 2, RM-Bench) is several answers, not a conversation:
        # its last item is no more "the" answer than any other.
        raise Skip("non_text_content", "a list of plain answers where a message list is needed")
    return conv[-1]


# Formats that read lists of plain-string answers; any other format would have to guess which one.
ANSWER_LIST_FORMATS = ("rewardbench2", "rmbench")


def _answer_list_field(sample: list[dict]) -> str | None:
    """``chosen`` / ``rejected`` when its first value is a list holding a plain string, else None."""
    for key in ("chosen", "rejected"):
        value = _first(sample, key)
        if isinstance(value, list) and any(isinstance(v, str) for v in value):
            return key
    return None


# --- pairwise judge-benchmark formats -------------------------------------------------------------


def _with_input(instruction: Any, extra: Any) -> Any:
    """PandaLM/Alpaca style: the instruction, then the input on a new line when there is one."""
    if extra is None or not isinstance(instruction, str):
        return instruction
    if not isinstance(extra, str):
        raise Skip("non_text_content", "input")
    return "\n".join(p for p in (instruction, extra) if p.strip()) or instruction


@register("pandalm", _has("instruction", "response1", "response2", "annotator1"))
def pandalm(row: dict, opts: Options) -> Draft:
    """PandaLM test set: majority of annotator1..3 (0 tie, 1, 2); no majority is a tie too."""
    _need(row, "instruction", "response1", "response2", "annotator1", "annotator2", "annotator3")
    votes = [_label(row[f"annotator{k}"], (0, 1, 2)) for k in (1, 2, 3)]
    top, n = Counter(votes).most_common(1)[0]
    tie = n < 2 or top == 0
    chosen, rejected = _pick(1 if tie else top, row["response1"], row["response2"])
    meta = {"annotators": votes, "original_id": str(row.get("idx"))}
    return Draft(_with_input(row["instruction"], row.get("input")), chosen, rejected, meta=meta, tie=tie)


@register("evalbiasbench", _has("instruction", "response1", "response2", "label"))
def evalbiasbench(row: dict, opts: Options) -> Draft:
    """OffsetBias EvalBiasBench: {bias, instruction, response1, response2, label "1"/"2"}."""
    _need(row, "instruction", "response1", "response2", "label")
    label = _label(row["label"], (1, 2))
    chosen, rejected = _pick(label, row["response1"], row["response2"])
    return Draft(row["instruction"], chosen, rejected, source=row.get("bias"), meta={"label": label})


@register("llmbar", _has("input", "output_1", "output_2", "label"))
def llmbar(row: dict, opts: Options) -> Draft:
    """LLMBar: {input, output_1, output_2, label 1/2}; the source is the file's subset name."""
    _need(row, "input", "output_1", "output_2", "label")
    label = _label(row["label"], (1, 2))
    chosen, rejected = _pick(label, row["output_1"], row["output_2"])
    return Draft(row["input"], chosen, rejected, meta={"label": label})


@register("judgebench", _has("question", "response_A", "response_B", "label"))
def judgebench(row: dict, opts: Options) -> Draft:
    """JudgeBench (Tan et al. 2024): label "A>B"/"B>A"; "A=B" is a tie, anything else invalid.

    The source (e.g. ``livebench-math``, ``mmlu-pro-law``) gives JudgeBench's categories.
    """
    _need(row, "question", "response_A", "response_B", "label")
    label = str(row["label"]).replace(" ", "")
    if label not in ("A>B", "B>A", "A=B", "B=A"):
        raise Skip("invalid_label", repr(row["label"])[:40])
    tie = label in ("A=B", "B=A")
    chosen, rejected = _pick(2 if label == "B>A" else 1, row["response_A"], row["response_B"])
    meta = {"original_id": str(row.get("pair_id")), "label": label}
    return Draft(row["question"], chosen, rejected, source=row.get("source"), meta=meta, tie=tie)


@register("autoj", _has("prompt", "response 1", "response 2", "label"))
def autoj(row: dict, opts: Options) -> Draft:
    """Auto-J pairwise test set (Li et al. 2023): label 0 = response 1 better, 1 = response 2, 2 = tie.

    The source is the scenario (e.g. ``post_summarization``); Auto-J groups scenarios for its table.
    """
    _need(row, "prompt", "response 1", "response 2", "label")
    label = _label(row["label"], (0, 1, 2))
    chosen, rejected = _pick(2 if label == 1 else 1, row["response 1"], row["response 2"])
    return Draft(row["prompt"], chosen, rejected, source=row.get("scenario"), meta={"label": label},
                 tie=label == 2)


def _rewardbench2_detect(keys: set[str], sample: list[dict]) -> bool:
    return {"prompt", "chosen", "rejected", "num_correct"} <= keys and isinstance(_first(sample, "chosen"), list)


@register("rewardbench2", _rewardbench2_detect)
def rewardbench2(row: dict, opts: Options) -> list[Draft]:
    """RewardBench 2 (allenai/reward-bench-2, split ``test``): ``chosen`` holds the ``num_correct``
    correct answers (one, except in Ties), ``rejected`` the wrong ones (three, except in Ties).

    One pair per (correct answer i, wrong answer j), ``cell`` = [i, j]; the official best-of-4 metric
    (:func:`conj_train.evaluate.official_metrics.rewardbench2_metrics`) regroups a row's pairs by its ``id``
    (``original_id``) and needs all ``row_pairs`` of them. The source is the row's ``subset``.
    """
    _need(row, "prompt", "chosen", "rejected", "num_correct")
    chosen, rejected = row["chosen"], row["rejected"]
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise Skip("non_text_content", "chosen/rejected are not lists of answers")
    if not chosen or not rejected:
        raise Skip("missing_field", f"{len(chosen)} correct / {len(rejected)} wrong answers")
    if _label(row["num_correct"], tuple(range(1, len(chosen) + 1))) != len(chosen):
        raise Skip("invalid_label", f"num_correct {row['num_correct']!r} but {len(chosen)} chosen answers")
    subset = row.get("subset")
    meta = {"subset": subset, "original_id": str(row.get("id")), "row_pairs": len(chosen) * len(rejected)}
    return [
        Draft(row["prompt"], c, r, source=subset, meta={**meta, "cell": [i, j]})
        for i, c in enumerate(chosen)
        for j, r in enumerate(rejected)
    ]


RMBENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")


def _rmbench_detect(keys: set[str], sample: list[dict]) -> bool:
    chosen = _first(sample, "chosen")
    return {"prompt", "chosen", "rejected"} <= keys and isinstance(chosen, list) \
        and len(chosen) == len(RMBENCH_STYLES) and all(isinstance(c, str) for c in chosen)


@register("rmbench", _rmbench_detect)
def rmbench(row: dict, opts: Options) -> list[Draft]:
    """RM-Bench (Liu et al. 2024): three chosen and three rejected answers per prompt, styles concise,
    detailed plain, detailed markdown; one pair per (chosen style i, rejected style j), 9 per row.

    The source is the row's ``domain`` (total_dataset.json) or else the file's name (``chat_filtered``);
    RM-Bench's domains are the names' prefixes (safety-refuse and safety-response form safety).
    """
    _need(row, "prompt", "chosen", "rejected")
    chosen, rejected = row["chosen"], row["rejected"]
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise Skip("non_text_content", "chosen/rejected are not lists of answers")
    if len(chosen) != len(RMBENCH_STYLES) or len(rejected) != len(RMBENCH_STYLES):
        raise Skip("missing_field", f"{len(chosen)} chosen / {len(rejected)} rejected answers, not 3 / 3")
    domain = row.get("domain")
    meta = {"prompt_id": str(row.get("id")), "subset": row.get("subset")}
    return [
        Draft(row["prompt"], c, r, source=domain, meta={**meta, "cell": [i, j]})
        for i, c in enumerate(chosen)
        for j, r in enumerate(rejected)
    ]


@register("pku-saferlhf", lambda k, s: {"prompt", "response_0", "response_1"} <= k
          and bool({"better_response_id", "safer_response_id"} & k))
def pku_saferlhf(row: dict, opts: Options) -> Draft:
    """PKU-SafeRLHF: chosen = response_{better_response_id} (or safer_, with pku_label="safer")."""
    key = f"{opts.pku_label}_response_id"
    _need(row, "prompt", "response_0", "response_1", key)
    label = _label(row[key], (0, 1))
    chosen, rejected = _pick(label + 1, row["response_0"], row["response_1"])
    meta = {"label_field": key, "is_safe": [row.get("is_response_0_safe"), row.get("is_response_1_safe")]}
    return Draft(row["prompt"], chosen, rejected, source=row.get("prompt_source"), meta=meta)


@register("rewardbench", lambda k, s: {"prompt", "chosen", "rejected", "subset"} <= k
          and isinstance(_first(s, "chosen"), str))
def rewardbench(row: dict, opts: Options) -> Draft:
    """RewardBench: {prompt, chosen, rejected, subset, id}; the source is the subset."""
    _need(row, "prompt", "chosen", "rejected")
    meta = {"subset": row.get("subset"), "original_id": str(row.get("id"))}
    return Draft(row["prompt"], row["chosen"], row["rejected"], source=row.get("subset"), meta=meta)


# --- training preference formats -------------------------------------------------------------------


def _score(row: dict, *keys: str) -> float | None:
    key = next((k for k in keys if row.get(k) is not None), None)
    if key is None:
        return None
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Skip("invalid_label", f"{key}={value!r}"[:60])
    return float(value)


@register("ultrafeedback", _types(prompt=str, chosen=list))
def ultrafeedback(row: dict, opts: Options) -> Draft:
    """UltraFeedback-binarized / argilla: prompt str, chosen/rejected message lists, scores; = is a tie."""
    _need(row, "prompt", "chosen", "rejected")
    sc = _score(row, "score_chosen", "chosen-rating", "chosen_rating")
    sr = _score(row, "score_rejected", "rejected-rating", "rejected_rating")
    conv = row["chosen"]
    prompt = conv[:-1] if isinstance(conv, list) and len(conv) > 1 else row["prompt"]
    meta = {"score_chosen": sc, "score_rejected": sr, "original_id": str(row.get("prompt_id"))}
    return Draft(prompt, _last_message(conv), _last_message(row["rejected"]), meta=meta,
                 tie=sc is not None and sc == sr)


@register("trl-conversational", _types(prompt=list, chosen=list))
def trl_conversational(row: dict, opts: Options) -> Draft:
    """TRL conversational, explicit prompt: prompt messages + chosen/rejected assistant messages."""
    _need(row, "prompt", "chosen", "rejected")
    return Draft(row["prompt"], _last_message(row["chosen"]), _last_message(row["rejected"]))


@register("skywork", lambda k, s: "prompt" not in k and isinstance(_first(s, "chosen"), list))
def skywork(row: dict, opts: Options) -> Draft:
    """Skywork / TRL conversational implicit prompt: full conversations; the last turn is the answer.

    The prompt turns are taken from ``chosen`` (as Con-J does); ``rejected`` only gives its last turn.
    """
    _need(row, "chosen", "rejected")
    conv = row["chosen"]
    prompt = conv[:-1] if isinstance(conv, list) else conv
    return Draft(prompt, _last_message(conv), _last_message(row["rejected"]), source=row.get("source"))


_HH_TAG = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _is_transcript(text: Any) -> bool:
    return isinstance(text, str) and text.lstrip().startswith("Human:") and "\n\nAssistant:" in text


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


@register("hh-rlhf", lambda k, s: "prompt" not in k and _is_transcript(_first(s, "chosen")))
def hh_rlhf(row: dict, opts: Options) -> Draft:
    """Anthropic hh-rlhf transcripts: the prompt is the longest common prefix up to its last
    ``\\n\\nAssistant:``; the rest of each transcript is the answer; earlier turns become context."""
    _need(row, "chosen", "rejected")
    chosen, rejected = row["chosen"], row["rejected"]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return Draft("", chosen, rejected)
    chosen, rejected = "\n\n" + chosen.lstrip(), "\n\n" + rejected.lstrip()
    cut = chosen.rfind("\n\nAssistant:", 0, _common_prefix_len(chosen, rejected))
    if cut < 0:
        raise Skip("missing_field", "no shared '\\n\\nAssistant:' turn")
    parts = _HH_TAG.split(chosen[:cut])
    if parts[0].strip():
        raise Skip("missing_field", "transcript does not start with 'Human:'")
    pairs = zip(parts[1::2], parts[2::2], strict=True)
    turns = [{"role": _HH_ROLES[role], "content": text.strip()} for role, text in pairs]
    start = cut + len("\n\nAssistant:")
    return Draft(turns, chosen[start:].strip(), rejected[start:].strip())


@register("conj", _has("id", "context", "question", "chosen", "rejected"))
def conj_records(row: dict, opts: Options) -> Draft:
    """This project's canonical records (``write_records``, ``conj data convert``): read back as
    written, context turns before the question, so ids are unchanged."""
    _need(row, "question", "chosen", "rejected")
    context = row.get("context") or []
    if not isinstance(context, list):
        raise Skip("non_text_content", "context is not a message list")
    return Draft([*context, {"role": "user", "content": row["question"]}], row["chosen"], row["rejected"],
                 source=row.get("source"), meta=row.get("meta") or {})


@register("trl-standard", lambda k, s: isinstance(_first(s, "chosen"), str) and "rejected" in k
          and ("prompt" not in k or isinstance(_first(s, "prompt"), str)))
def trl_standard(row: dict, opts: Options) -> Draft:
    """TRL standard: prompt/chosen/rejected strings; without a prompt, the longest common prefix
    (cut back to a word boundary, like TRL's extract_prompt) is the prompt; transcripts go to hh-rlhf."""
    if "prompt" in row:
        _need(row, "prompt", "chosen", "rejected")
        return Draft(row["prompt"], row["chosen"], row["rejected"])
    _need(row, "chosen", "rejected")
    chosen, rejected = row["chosen"], row["rejected"]
    if _is_transcript(chosen) and _is_transcript(rejected):
        return hh_rlhf(row, opts)
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return Draft("", chosen, rejected)
    n = _common_prefix_len(chosen, rejected)
    if n < min(len(chosen), len(rejected)):
        n = max((i for i in range(n) if chosen[i].isspace()), default=n)
    return Draft(chosen[:n].strip(), chosen[n:].strip(), rejected[n:].strip())


@register("fields")
def fields(row: dict, opts: Options) -> Draft:
    """User mapping (field_map): prompt_field, chosen_field, rejected_field [, context_field, source_field].

    The prompt may be a string or a message list; answers strings or message lists (last message).
    """
    fm = opts.field_map or {}
    _need(row, fm["prompt_field"], fm["chosen_field"], fm["rejected_field"])
    prompt = row[fm["prompt_field"]]
    if fm.get("context_field") and row.get(fm["context_field"]) is not None:
        context = row[fm["context_field"]]
        if not isinstance(context, list):
            raise Skip("non_text_content", f"{fm['context_field']} is not a message list")
        prompt = [*context, *(prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])]
    answers = [row[fm[k]] for k in ("chosen_field", "rejected_field")]
    answers = [_last_message(a) if isinstance(a, list) else a for a in answers]
    source = row.get(fm["source_field"]) if fm.get("source_field") else None
    return Draft(prompt, *answers, source=source)


def check_field_map(field_map: dict[str, str]) -> dict[str, str]:
    """Validate a user field mapping (``prompt``/``prompt_field`` spellings both accepted)."""
    fm = {k if k.endswith("_field") else f"{k}_field": v for k, v in field_map.items()}
    unknown = sorted(set(fm) - set(FIELD_MAP_KEYS))
    if unknown:
        raise ConjError(f"unknown field mapping key(s) {unknown}; allowed: {', '.join(FIELD_MAP_KEYS)}")
    missing = [k for k in FIELD_MAP_KEYS[:3] if not fm.get(k)]
    if missing:
        raise ConjError(f"field mapping needs {', '.join(missing)} (e.g. --field prompt_field=question)")
    return fm


def get_format(name: str) -> Format:
    """The registered format called ``name``; ConjError naming the known ones otherwise."""
    if name not in FORMATS:
        raise ConjError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def detect_format(rows: list[Any], where: str) -> Format:
    """Pick the format from the field names (and value types) of the first rows."""
    sample = [r for r in rows[:50] if isinstance(r, dict)]
    keys = set().union(*(r.keys() for r in sample)) if sample else set()
    for fmt in FORMATS.values():
        if fmt.detect and sample and fmt.detect(keys, sample):
            listed = _answer_list_field(sample) if fmt.name not in ANSWER_LIST_FORMATS else None
            if listed:
                raise ConjError(
                    f"{where}: '{listed}' holds a list of answers, a shape the '{fmt.name}' format can only "
                    "guess at (it would keep one answer); pass --format rewardbench2 (rows with num_correct) "
                    "or rmbench (3 + 3 styles), or convert the file to one pair per row"
                )
            return fmt
    shown = ", ".join(sorted(map(str, keys))[:12]) or "none"
    raise ConjError(
        f"cannot detect the preference format of {where} from its fields ({shown}); pass --format "
        f"({', '.join(FORMATS)}) or map fields with --field prompt_field=NAME chosen_field=NAME "
        "rejected_field=NAME"
    )
