"""``conj data check|convert|relevance``: inspect preference data, convert it to canonical JSONL records,
or build relevance pairs (own answer vs another question's answer) from it."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _source_args(p: argparse.ArgumentParser) -> None:
    from conj_train.data.formats import FORMATS  # stdlib-only module: cheap enough for --help

    p.add_argument("source", help="a .json/.jsonl(.gz)/.parquet/.csv file, a folder, a save_to_disk "
                   "folder, or a Hugging Face Hub dataset id")
    p.add_argument("--format", help=f"input format (default: auto-detect): {', '.join(FORMATS)}")
    p.add_argument("--config", help="Hub dataset config name")
    p.add_argument("--split", help="split of a Hub dataset or DatasetDict (default: train)")
    p.add_argument("--multi-turn", choices=("context", "first_turn"), default="context",
                   help="keep earlier turns as context (default) or use the first user turn only (Con-J)")
    p.add_argument("--pku-label", choices=("better", "safer"), default="better",
                   help="PKU-SafeRLHF label to use as the preference (default: better)")
    p.add_argument("--field", action="append", default=[], metavar="KEY=NAME",
                   help="map fields for format 'fields': prompt_field=, chosen_field=, rejected_field=, "
                   "context_field=, source_field= (repeatable)")
    p.add_argument("--strict", action="store_true", help="fail on the first row that would be skipped")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` subcommand with its ``check`` and ``convert`` actions."""
    p = sub.add_parser("data", help="check or convert preference data",
                       description="Read preference data of any supported format into canonical records.")
    actions = p.add_subparsers(dest="data_action", metavar="ACTION")
    check = actions.add_parser("check", help="report rows used, skips by reason, formats and lengths")
    _source_args(check)
    check.add_argument("--tokenizer", help="tokenizer folder/id for token-length percentiles")
    check.add_argument("--mode", choices=("train", "eval"), default="train",
                       help="train (default): the rows training ingestion uses; eval: the benchmark's own "
                       "row set, what `conj eval` scores (ties, repeats, empty or identical answers kept)")
    convert = actions.add_parser("convert", help="write canonical records as JSONL and print the report")
    _source_args(convert)
    convert.add_argument("--output", "-o", required=True, help="output .jsonl path")
    convert.add_argument("--decontaminate", nargs="+", action="extend", default=[], metavar="EVAL_SOURCE",
                         help="drop rows whose question appears in these evaluation sources")
    convert.add_argument("--ngram", type=int, metavar="N",
                         help="with --decontaminate: also drop rows sharing any N-word sequence")
    relevance = actions.add_parser(
        "relevance", help="build relevance pairs: each question's own answer vs another question's answer",
        description="Write train.jsonl and heldout.jsonl of relevance pairs (chosen = the question's own "
        "answer, rejected = an answer written for another question of the same side) and report.json.")
    _source_args(relevance)
    relevance.add_argument("--output-dir", "-o", required=True, help="folder for train.jsonl, heldout.jsonl, "
                           "report.json (not the source, nor inside it)")
    relevance.add_argument("--negative", choices=("random", "neighbor"), default="random",
                           help="donor question: seeded random (default) or the most similar question by "
                           "RapidFuzz token_sort_ratio (LLMBar's Neighbor idea)")
    relevance.add_argument("--heldout-percent", type=int, default=30, metavar="P",
                           help="questions with sha256(context+question) %% 100 < P are held out (default 30; "
                           "100 = all held out, for a transfer set)")
    relevance.add_argument("--seed", type=int, default=0, help="seed of the random donors (default 0)")
    relevance.add_argument("--min-answer-words", type=int, default=1, metavar="N",
                           help="answers with fewer words are generic and left out (default 1)")
    relevance.add_argument("--keep-shared-answers", action="store_true",
                           help="keep answers whose text answers several questions (left out by default)")
    relevance.add_argument("--max-chars", type=int, default=0, metavar="N",
                           help="leave out questions whose question + context + own answer exceed N "
                           "characters (default 0: no cap)")
    p.set_defaults(func=run, data_parser=p)


def _field_map(pairs: list[str]) -> dict[str, str] | None:
    from conj_train.errors import ConjError

    out = {}
    for pair in pairs:
        key, sep, name = pair.partition("=")
        if not sep or not key or not name:
            raise ConjError(f"--field expects KEY=NAME (e.g. prompt_field=question), got {pair!r}")
        out[key.strip()] = name.strip()
    return out or None


def _load(args: argparse.Namespace, **extra: Any):
    from conj_train.data import load_preferences

    return load_preferences(
        args.source, format=args.format, config=args.config, split=args.split,
        field_map=_field_map(args.field), multi_turn=args.multi_turn, pku_label=args.pku_label,
        strict=args.strict, mode=getattr(args, "mode", "train"), **extra,
    )


def _print_report(info: dict) -> None:
    print(f"source:      {info['dataset']}")
    print(f"format:      {info['format']}")
    print(f"rows read:   {info['rows_read']}")
    print(f"rows used:   {info['rows_used']}")
    if info.get("mode") == "eval":
        bench = info.get("benchmark")
        print(f"mode:        eval (what `conj eval` scores; benchmark: {bench or 'none, project metrics only'})")
        print(f"pairs:       {info['pairs']} ({info['kept'].get('tie', 0)} tie-labelled)")
        for reason, n in sorted(info["kept"].items(), key=lambda kv: -kv[1]):
            print(f"  kept {reason:<13} {n:>7}  (training ingestion would skip these)")
    print(f"skipped:     {sum(info['skipped'].values())}")
    for reason, n in sorted(info["skipped"].items(), key=lambda kv: -kv[1]):
        examples = info["skip_examples"].get(reason, [])
        more = ", ..." if n > len(examples) else ""
        print(f"  {reason:<18} {n:>7}  (rows {', '.join(map(str, examples))}{more})")
    print(f"multi-turn:  {info['multi_turn_rows']} ({100 * info['multi_turn_share']:.1f}% of used rows)")
    for unit, table in info.get("lengths", {}).items():
        print(f"length in {unit}:")
        print(" " * 12 + "".join(f"{k:>9}" for k in ("p50", "p90", "p99", "max")))
        for key, q in table.items():
            print(f"  {key:<10}" + "".join(f"{q[k]:>9}" for k in ("p50", "p90", "p99", "max")))


def _tokenizer(path: str | None) -> Any:
    if not path:
        return None
    from conj_train.errors import ConjError

    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:
        raise ConjError(f"cannot load tokenizer {path!r}: {str(e).splitlines()[0][:200]}") from None


def run(args: argparse.Namespace) -> int:
    """Dispatch ``conj data ACTION``."""
    if args.data_action is None:
        args.data_parser.print_help()
        return 2
    from conj_train.data import length_stats, write_records

    if args.data_action == "relevance":
        return _relevance(args)
    if args.data_action == "check":
        tokenizer = _tokenizer(args.tokenizer)
        result = _load(args)
        info = {**result.report.to_dict(), "lengths": length_stats(result.records, tokenizer)}
        if args.mode == "eval":
            from conj_train.evaluate.benchmarks import benchmark_for

            bench = benchmark_for(result.report.format)
            info["benchmark"] = bench.name if bench else None
    else:
        from conj_train.runs import check_output_file

        check_output_file(args.output, inputs=[args.source, *args.decontaminate])
        result = _load(args, decontaminate_against=args.decontaminate or None, ngram=args.ngram)
        written = write_records(args.output, result.records)
        info = {**result.report.to_dict(), "output": args.output, "written": written}
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        _print_report(info)
        if "output" in info:
            print(f"wrote {info['written']} records to {info['output']}")
    return 0


def _relevance(args: argparse.Namespace) -> int:

    from conj_train.data.relevance import RelevanceOptions, build_relevance_pairs
    from conj_train.io import atomic_write_json, write_jsonl
    from conj_train.runs import check_output_dir, check_separate

    out = check_output_dir(args.output_dir)
    check_separate(out, [args.source])
    opts = RelevanceOptions(heldout_percent=args.heldout_percent, negative=args.negative, seed=args.seed,
                            min_answer_words=args.min_answer_words,
                            drop_shared_answers=not args.keep_shared_answers, max_chars=args.max_chars)
    opts.check()
    # Eval-mode ingestion keeps tie rows (either answer is the question's own) and repeated rows,
    # which the relevance rules then count themselves.
    args.mode = "eval"
    result = _load(args)
    sides, report = build_relevance_pairs(result.records, opts)
    out.mkdir(parents=True, exist_ok=True)
    for side, pairs in sides.items():
        write_jsonl(out / f"{side}.jsonl", pairs)
    info = {"ingest": result.report.to_dict(), "relevance": report.to_dict()}
    atomic_write_json(out / "report.json", info)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    _print_report(result.report.to_dict())
    print(f"questions:   {report.records_in} records -> train {report.pairs['train']}, "
          f"held-out {report.pairs['heldout']} pairs ({args.negative} donors)")
    for reason, n in sorted(report.skipped.items(), key=lambda kv: -kv[1]):
        print(f"  {reason:<18} {n:>7}")
    print(f"wrote {out / 'train.jsonl'}, {out / 'heldout.jsonl'}, {out / 'report.json'}")
    return 0
