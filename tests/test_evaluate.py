"""Stage 4 on the tiny model: records, metrics files, resume, shards, reward models, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conj_train.cli import main as conj_main
from conj_train.errors import ConjError
from conj_train.evaluate.run import EvalConfig, run_eval
from conj_train.io import iter_jsonl, read_json
from conj_train.prompts.build import chosen_slot
from conj_train.verdicts import parse_verdict


def _pairs(path: Path, n: int) -> Path:
    rows = [
        {
            "prompt": f"Question {i}: name a fruit.",
            "chosen": f"An apple, number {i}." + " Crisp." * (i % 3),
            "rejected": f"A hammer {i}.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model: Path | list[str], data: Path, out: Path, **kw: object) -> EvalConfig:
    base = {
        "model_name_or_path": model if isinstance(model, list) else str(model),
        "dataset_name": f"fruit={data}",
        "output_dir": str(out),
        "max_new_tokens": 4,
        "progress": False,
        "threads": 1,
        "batch_pairs": 2,
    }
    base.update(kw)
    cfg = EvalConfig(**base)
    cfg.validate()
    return cfg


def _records(out: Path, name: str) -> list[dict]:
    return [r for p in sorted((out / "models" / name / "judgments").glob("*.jsonl")) for r in iter_jsonl(p)]



def test_both_orders_write_records_metrics_summary_and_charts(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl", 3)
    res = run_eval(_cfg(tiny_model_dir, data, tmp_path / "out"))
    rows = _records(tmp_path / "out", "model")
    assert len(rows) == 6 and res.merged
    for pid in {r["pair_id"] for r in rows}:
        first, second = sorted((r for r in rows if r["pair_id"] == pid), key=lambda r: r["swapped"])
        assert first["label"] == chosen_slot(pid, 2021) and second["label"] == 3 - first["label"]
    for r in rows:
        assert r["text"].startswith(' {"原因":')
        assert r["verdict"] == parse_verdict(r["text"], "lenient").verdict
        assert r["correct"] == (0.5 if r["verdict"] is None else float(r["verdict"] == r["label"]))
    m = read_json(tmp_path / "out" / "metrics.json")["models"]["model"]["datasets"]["fruit"]["overall"]
    assert m["pairs"] == 3 and m["judgments"] == 6
    assert m["parse_failures"] == sum(r["verdict"] is None for r in rows)
    assert m["accuracy"] == pytest.approx(sum(r["correct"] for r in rows if not r["swapped"]) / 3)
    assert m["accuracy_avg"] == pytest.approx(sum(r["correct"] for r in rows) / 6)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Comparison" in summary and "| model | judge | fruit | 3 |" in summary
    for png in ("accuracy.png", "reliability.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    assert read_json(tmp_path / "out" / "manifest.json")["complete"]


def test_random_order_judges_each_pair_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl", 3)
    res = run_eval(_cfg(tiny_model_dir, data, tmp_path / "out", orders="random", transfer=False))
    rows = _records(tmp_path / "out", "model")
    assert len(rows) == 3 and not any(r["swapped"] for r in rows)
    m = res.metrics["models"]["model"]["datasets"]["fruit"]["overall"]
    assert m["accuracy_avg"] is None and m["consistency"] is None


def test_resume_generates_only_the_missing_records(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl", 3)
    out = tmp_path / "out"
    run_eval(_cfg(tiny_model_dir, data, out))
    full = {(r["pair_id"], r["swapped"]): r["text"] for r in _records(out, "model")}
    jpath = out / "models" / "model" / "judgments" / "shard-00000-of-00001.jsonl"
    lines = jpath.read_text().splitlines(keepends=True)
    jpath.write_text("".join(lines[:2]) + lines[2][:20])  # two records kept + a torn line
    mpath = out / "models" / "model" / "manifests" / "shard-00000-of-00001.json"
    mpath.write_text(json.dumps({**read_json(mpath), "complete": False}))  # as a killed run leaves it
    (out / "metrics.json").unlink()
    run_eval(_cfg(tiny_model_dir, data, out))
    assert (out / "metrics.json").exists()
    manifest = read_json(out / "models" / "model" / "manifests" / "shard-00000-of-00001.json")
    assert manifest["counts"]["resumed_from"] == 2
    assert {(r["pair_id"], r["swapped"]): r["text"] for r in _records(out, "model")} == full


def test_shards_merge_when_the_last_one_finishes(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl", 4)
    out = tmp_path / "out"
    first = run_eval(_cfg(tiny_model_dir, data, out, shard="0/2", transfer=False))
    assert not first.merged and not (out / "metrics.json").exists()
    second = run_eval(_cfg(tiny_model_dir, data, out, shard="1/2", transfer=False))
    assert second.merged and len(_records(out, "model")) == 8
    assert second.metrics["models"]["model"]["datasets"]["fruit"]["overall"]["pairs"] == 4


def test_a_changed_config_is_refused_without_overwrite(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl", 1)
    run_eval(_cfg(tiny_model_dir, data, tmp_path / "out", transfer=False))
    mpath = tmp_path / "out" / "models" / "model" / "manifests" / "shard-00000-of-00001.json"
    mpath.write_text(json.dumps({**read_json(mpath), "complete": False}))  # killed before finishing
    with pytest.raises(ConjError, match="different config"):
        run_eval(_cfg(tiny_model_dir, data, tmp_path / "out", transfer=False, max_new_tokens=5))
    res = run_eval(
        _cfg(tiny_model_dir, data, tmp_path / "out", transfer=False, max_new_tokens=5, overwrite=True)
    )
    assert res.merged and len(_records(tmp_path / "out", "model")) == 2


def test_judge_and_reward_model_side_by_side(tiny_model_dir: Path, tiny_rm_dir: Path, tmp_path: Path) -> None:
    from conj_train.inference.reward_model import RewardModel

    data = _pairs(tmp_path / "pairs.jsonl", 3)
    out = tmp_path / "out"
    res = run_eval(_cfg([f"base={tiny_model_dir}", f"rm={tiny_rm_dir}"], data, out, transfer=False))
    rm_rows = _records(out, "rm")
    assert len(rm_rows) == 3 and len(_records(out, "base")) == 6
    rm = RewardModel.from_pretrained(str(tiny_rm_dir), threads=1)
    for r in rm_rows:
        assert r["verdict"] == (1 if r["reward_1"] > r["reward_2"] else 2)
        assert r["correct"] == float(r["verdict"] == r["label"])
    comparison = res.metrics["comparison"]
    assert [(row["model"], row["kind"]) for row in comparison] == [("base", "judge"), ("rm", "rm")]
    rm_metrics = res.metrics["models"]["rm"]["datasets"]["fruit"]["overall"]
    assert rm_metrics["consistency"] == 1.0 and rm_metrics["accuracy_avg"] == rm_metrics["accuracy_strict"]
    assert "| rm | rm | fruit | 3 |" in (out / "summary.md").read_text()
    direct = rm.compare("Question 0: name a fruit.", "An apple, number 0.", "A hammer 0.")
    row0 = next(r for r in rm_rows if r["chosen_chars"] == len("An apple, number 0."))
    assert row0["p_chosen"] == pytest.approx(direct.probability, abs=1e-5)


def test_cli_compares_named_models_with_overrides(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl", 2)
    out = tmp_path / "out"
    code = conj_main(
        [
            "eval",
            "--model",
            f"a={tiny_model_dir}",
            "--model",
            f"b={tiny_model_dir}",
            "--dataset",
            str(data),
            "--output",
            str(out),
            "--max_new_tokens",
            "3",
            "--orders",
            "random",
            "--progress",
            "false",
            "--threads",
            "1",
            "--transfer",
            "false",
        ]
    )
    assert code == 0
    metrics = read_json(out / "metrics.json")
    assert list(metrics["models"]) == ["a", "b"] and metrics["orders"] == "random"
    assert [r["dataset"] for r in metrics["comparison"]] == ["pairs", "pairs"]
    assert conj_main(["eval", "--dataset", str(data), "--output", str(out)]) == 2


def test_default_names_drop_data_extensions_only() -> None:
    cfg = EvalConfig(
        model_name_or_path=["Qwen/Qwen2.5-7B-Instruct", "judge=runs/x"], dataset_name="/d/natural.json", output_dir="o"
    )
    assert cfg.model_specs() == [("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"), ("judge", "runs/x")]
    assert cfg.dataset_specs() == [("natural", "/d/natural.json")]


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConjError, match="orders"):
        EvalConfig(model_name_or_path="m", dataset_name="d", output_dir="o", orders="three").validate()
    with pytest.raises(ConjError, match="two models named 'm'"):
        EvalConfig(model_name_or_path=["a/m", "b/m"], dataset_name="d", output_dir="o").validate()
    with pytest.raises(ConjError, match="model path not found"):
        run_eval(EvalConfig(model_name_or_path=str(tmp_path / "missing"), dataset_name="d", output_dir=str(tmp_path / "o")))


def test_vllm_engine_evaluates_without_probabilities(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    for var in ("LOCAL_WORLD_SIZE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "fake_vllm"))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setitem(sys.modules, "vllm", importlib.import_module("vllm"))  # the fake, for this test only
    data = _pairs(tmp_path / "pairs.jsonl", 2)
    res = run_eval(_cfg(tiny_model_dir, data, tmp_path / "out", engine="vllm", max_new_tokens=8))
    rows = _records(tmp_path / "out", "model")
    assert len(rows) == 4 and all(r["probability"] is None and r["transfer_verdict"] is None for r in rows)
    assert res.metrics["models"]["model"]["datasets"]["fruit"]["overall"]["probability"]["coverage"] == 0.0


# --- benchmark protocols: row sets, official metrics, splits ----------------------------------------


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_benchmark_rows_are_all_scored_with_official_metrics(tiny_rm_dir: Path, tmp_path: Path) -> None:
    # Auto-J labels: 0 = response 1 better, 1 = response 2, 2 = tie. Row 3 repeats row 0, row 4 has
    # identical answers: training ingestion would drop them and the tie, evaluation scores them all.
    autoj = [
        {"scenario": "code_generation", "prompt": "Sort a list.", "response 1": "sorted(x)", "response 2": "x", "label": 0},
        {"scenario": "chitchat", "prompt": "Hi!", "response 1": "Go away.", "response 2": "Hello!", "label": 1},
        {"scenario": "chitchat", "prompt": "Hey", "response 1": "Hi.", "response 2": "Hello.", "label": 2},
        {"scenario": "code_generation", "prompt": "Sort a list.", "response 1": "sorted(x)", "response 2": "x", "label": 0},
        {"scenario": "chitchat", "prompt": "Yo", "response 1": "Yo.", "response 2": "Yo.", "label": 0},
    ]
    rmbench = [{"id": k, "prompt": f"Explain topic {k}.", "chosen": [f"good {k}", f"good {k}, longer", f"**good {k}**"],
                "rejected": [f"bad {k}", f"bad {k}, longer", f"**bad {k}**"]} for k in range(2)]
    a = _write_rows(tmp_path / "autoj.jsonl", autoj)
    b = tmp_path / "rmbench"
    b.mkdir()
    (b / "chat_filtered.json").write_text(json.dumps(rmbench))
    out = tmp_path / "out"
    cfg = EvalConfig(model_name_or_path=str(tiny_rm_dir), dataset_name=[f"autoj={a}", f"rmbench={b}"], output_dir=str(out),
                     progress=False, threads=1, batch_pairs=4)
    cfg.validate()
    res = run_eval(cfg)
    metrics = read_json(out / "metrics.json")
    rows = metrics["datasets"]["autoj"]
    assert (rows["rows_read"], rows["rows_used"], rows["pairs_built"], rows["skipped"]) == (5, 5, 5, {})
    assert rows["kept"] == {"tie": 1, "duplicate_pair": 1, "identical_answers": 1}
    entry = metrics["models"]["rm"]["datasets"]["autoj"]
    assert entry["rows"] == {"pairs_scored": 5, "ties": 1, "format": "autoj"} and entry["overall"]["pairs"] == 4
    # Auto-J's agreement for a reward model (its "single" type): the prediction from the two rewards
    # in the file's order (0 / 1 / 2 = tie) must equal the label, on every row.
    expected = 0
    for r in (r for r in _records(out, "rm") if r["dataset"] == "autoj"):
        row = autoj[int(r["pair_id"].rsplit("-", 1)[1])]  # eval ids end with the row
        chosen, other = r[f"reward_{r['label']}"], r[f"reward_{3 - r['label']}"]
        r1, r2 = (other, chosen) if row["label"] == 1 else (chosen, other)  # "chosen" is response 1 on a tie
        expected += (0 if r1 > r2 else 1 if r2 > r1 else 2) == row["label"]
    assert entry["official"]["autoj_agreement"] == pytest.approx(expected / 5)
    # RM-Bench: 2 prompts x 9 cells; hard = upper-triangle cells (chosen plainer than rejected).
    rm_entry = metrics["models"]["rm"]["datasets"]["rmbench"]
    assert metrics["datasets"]["rmbench"]["pairs_built"] == 18 and rm_entry["rows"]["pairs_scored"] == 18
    wins: dict[tuple[int, int], list[float]] = {}
    for r in _records(out, "rm"):
        if r["dataset"] == "rmbench":
            chosen = r["reward_1"] if r["label"] == 1 else r["reward_2"]
            rejected = r["reward_2"] if r["label"] == 1 else r["reward_1"]
            wins.setdefault(tuple(r["cell"]), []).append(float(chosen > rejected))
    hard = sum(sum(v) / len(v) for (i, j), v in wins.items() if i < j) / 3
    assert rm_entry["official"]["domains"]["chat"]["hard"] == pytest.approx(hard)
    summary = (out / "summary.md").read_text()
    assert "## Rows" in summary and "| autoj | autoj | – | 5 | 5 | 0 | 5 |" in summary
    assert "Auto-J pairwise: autoj_agreement" in summary and "RM-Bench" in res.summary
    # Only the chat domain: the overall is not RM-Bench's, and both the console and summary.md say so.
    assert rm_entry["official"]["complete"] is False
    assert "RM-Bench (INCOMPLETE: math, code, safety missing): overall" in res.summary
    assert "RM-Bench (official) (INCOMPLETE: math, code, safety missing): " in summary
    assert "| RM-Bench (INCOMPLETE: math, code, safety missing): overall" in summary


def test_eval_ingestion_keeps_position_swapped_copies_and_train_mode_drops_them(tmp_path: Path) -> None:
    rows = [{"input": "Q", "output_1": "A", "output_2": "B", "label": 1},
            {"input": "Q", "output_1": "B", "output_2": "A", "label": 2},  # MT-Bench human's swapped copies
            {"input": "R", "output_1": "", "output_2": "C", "label": 2}]
    data = tmp_path / "mt.json"
    data.write_text(json.dumps(rows))
    cfg = EvalConfig(model_name_or_path="m", dataset_name=f"mt={data}", output_dir=str(tmp_path / "o"))
    records, report, selection = cfg.load_eval_records("mt", str(data))
    assert len(records) == 3 and len({r["id"] for r in records}) == 3
    assert report.kept == {"duplicate_pair": 1, "empty_answer": 1} and selection["split"] is None
    cfg.ingest_mode = "train"
    records, report, _ = cfg.load_eval_records("mt", str(data))
    assert len(records) == 1 and report.skipped == {"duplicate_pair": 1, "empty_answer": 1}


def test_dataset_options_choose_a_split_per_data_set(tmp_path: Path) -> None:
    import datasets

    from conj_train.evaluate.benchmarks import default_split

    assert default_split("allenai/reward-bench") == "filtered" and default_split("ScalerLab/JudgeBench") == "gpt"
    assert default_split("some/other") is None
    rows = [{"prompt": f"P{i}", "chosen": f"C{i}", "rejected": f"R{i}"} for i in range(3)]
    datasets.DatasetDict({"filtered": datasets.Dataset.from_list(rows[:2]),
                          "raw": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    cfg = EvalConfig(model_name_or_path="m", dataset_name=[f"a={tmp_path / 'dd'}", f"b={tmp_path / 'dd'}"], output_dir="o",
                     dataset_options={"a": {"split": "filtered"}, "b": {"split": "raw"}})
    cfg.validate()
    assert len(cfg.load_eval_records("a", str(tmp_path / "dd"))[0]) == 2
    assert len(cfg.load_eval_records("b", str(tmp_path / "dd"))[0]) == 3
    with pytest.raises(ConjError, match="not a data set"):
        EvalConfig(model_name_or_path="m", dataset_name="x=d", output_dir="o", dataset_options={"y": {"split": "s"}}).validate()
    with pytest.raises(ConjError, match="allowed: split, format, config"):
        EvalConfig(model_name_or_path="m", dataset_name="x=d", output_dir="o", dataset_options={"x": {"splt": "s"}}).validate()


def test_con_j_paper_recipe_sets_its_protocol() -> None:
    from conj_train.config.parser import build_config
    from conj_train.config.values import read_yaml

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "con-j-qwen2-7b" / "eval_paper.yaml"
    cfg = build_config(EvalConfig, read_yaml(recipe))
    assert (cfg.orders, cfg.decoding, cfg.n, cfg.parser) == ("random", "sample", 1, "lenient")
    assert (cfg.temperature, cfg.top_p, cfg.repetition_penalty, cfg.max_new_tokens) == (1.0, 0.9, 1.2, 512)


def test_rewardbench2_rows_scored_best_of_4_and_written_in_rewardbench_format(tiny_rm_dir: Path, tmp_path: Path) -> None:
    rb2 = [{"id": str(k), "prompt": f"Q{k}", "chosen": [f"right {k}"], "rejected": [f"w{k}{j}" for j in range(3)],
            "num_correct": 1, "subset": subset} for k, subset in enumerate(["Focus", "Focus", "Math"])]
    rb2 += [{"id": "ref:0", "prompt": "T", "chosen": ["t1"], "rejected": ["x", "y"], "num_correct": 1, "subset": "Ties"},
            {"id": "tied:0", "prompt": "T", "chosen": ["t1", "t2"], "rejected": ["x", "y"], "num_correct": 2,
             "subset": "Ties"}]
    rb = [{"id": 30 + k, "prompt": f"P{k}", "chosen": f"good {k}", "rejected": f"bad {k}", "subset": "hep-go"}
          for k in range(3)]
    a, b = _write_rows(tmp_path / "rb2.jsonl", rb2), _write_rows(tmp_path / "rb.jsonl", rb)
    out = tmp_path / "out"
    cfg = EvalConfig(model_name_or_path=f"rm={tiny_rm_dir}", dataset_name=[f"rb2={a}", f"rb={b}"], output_dir=str(out),
                     progress=False, threads=1, batch_pairs=4)
    cfg.validate()
    run_eval(cfg)
    # The official rule on each row's rewards [chosen, rejected x3] (rewardbench/utils.py
    # reroll_and_score_dataset): 1 / (answers at the top score) if the chosen one is on top, else 0.
    scores: dict[str, dict[int, float]] = {}
    for r in _records(out, "rm"):
        if r["dataset"] == "rb2" and r["subset"] != "Ties":
            j = r["cell"][1]
            chosen, rejected = r[f"reward_{r['label']}"], r[f"reward_{3 - r['label']}"]
            scores.setdefault(r["row"], {})[0] = chosen
            scores[r["row"]][1 + j] = rejected
    def official(s: dict[int, float]) -> float:
        top = max(s.values())
        return 1 / sum(v == top for v in s.values()) if s[0] == top else 0.0
    focus = (official(scores["0"]) + official(scores["1"])) / 2
    entry = read_json(out / "metrics.json")["models"]["rm"]["datasets"]["rb2"]["official"]
    assert entry["benchmark"] == "RewardBench 2" and entry["subsets"]["Focus"]["score"] == pytest.approx(focus)
    assert entry["subsets"]["Math"]["score"] == official(scores["2"]) and entry["subsets"]["Ties"]["score"] is not None
    results = json.loads((out / "rewardbench-2" / "rb2" / "eval-set" / "rm.json").read_text())
    assert results == pytest.approx({"model": str(tiny_rm_dir), "model_type": "Seq. Classifier", "chat_template": None,
                                     "Focus": focus, "Math": official(scores["2"]),
                                     "Ties": entry["subsets"]["Ties"]["score"]})
    rows = json.loads((out / "rewardbench-2" / "rb2" / "eval-set-scores" / "rm.json").read_text())
    assert sorted(rows["id"]) == ["0", "1", "2", "ref:0", "tied:0"] and rows["results"][rows["id"].index("tied:0")] is None
    v1 = json.loads((out / "rewardbench" / "rb" / "eval-set" / "rm.json").read_text())
    v1_rows = json.loads((out / "rewardbench" / "rb" / "eval-set-scores" / "rm.json").read_text())
    assert sorted(v1_rows["id"]) == ["30", "31", "32"] and v1["hep-go"] == sum(v1_rows["results"]) / 3


def test_rewardbench_leaderboard_recipe_sets_its_protocol(tiny_model_dir: Path) -> None:
    from conj_train.config.parser import build_config
    from conj_train.config.values import read_yaml
    from conj_train.evaluate.records import make_judge
    from conj_train.prompts.templates import get_template

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "con-j-qwen2-7b" / "eval_rewardbench.yaml"
    cfg = build_config(EvalConfig, read_yaml(recipe))
    assert (cfg.orders, cfg.decoding, cfg.n, cfg.max_new_tokens, cfg.parser) == ("random", "greedy", 1, 2048,
                                                                               "rewardbench")
    assert (cfg.system_prompt, cfg.prefill, cfg.multi_turn) == ("", "", "first_turn")
    # RewardBench's CON_J_PROMPT (rewardbench/generative.py), its {{ }} unescaped: the conj-zh template.
    con_j_prompt = (
        "作为一个评价专家，给定一个问题和它的两个可能的回答，请选出哪一个回答在连贯性、准确性、覆盖度和上述定义的整体质量方面"
        "最为符合。请用JSON格式输出你的判断, 其中\"原因\"是你提供的解释，\"更好的回答\"是整数类型的1或2，例如{\"原因\": "
        "\"你的解释\", \"更好的回答\": 1}。以下是问题和候选回答的内容：\n    \n问题：Q\n回答1：A\n回答2：B")
    assert get_template(cfg.template).judge_prompt("Q", "A", "B") == con_j_prompt
    # Rendered as RewardBench does: an empty system turn, then the prompt; no default system prompt,
    # nothing after the generation prompt.
    cfg.model_name_or_path, cfg.engine, cfg.output_dir = str(tiny_model_dir), "hf", "o"
    judge = make_judge(cfg, str(tiny_model_dir))
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": con_j_prompt}]
    expected = judge.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert judge.render(con_j_prompt) == expected and judge.prefill == ""
    assert "You are a helpful assistant" not in expected
    judge.system_prompt = None  # unset: the template's default system turn
    assert "You are a helpful assistant" in judge.render(con_j_prompt)


def test_an_empty_system_prompt_and_prefill_on_the_command_line_stay_empty() -> None:
    from conj_train.config.parser import load_config

    cfg = load_config(EvalConfig, None, ["--system_prompt", "", "--prefill=", "--output", "o", "--model", "m",
                                         "--dataset", "d"])
    assert (cfg.system_prompt, cfg.prefill) == ("", "")  # an empty turn and no prefill, not the defaults
    cfg = load_config(EvalConfig, None, ["--system_prompt", "null", "--output", "o", "--model", "m", "--dataset", "d"])
    assert cfg.system_prompt is None and cfg.prefill is None
