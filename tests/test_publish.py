"""Publishing every stage's result: wandb logs (offline) and Hub pushes of the judgments, the pair
dataset and the evaluation results.

The Hub cannot be reached here, so the ``hub`` fixture stubs only the two network calls,
``HfApi.create_repo`` and ``HfApi.upload_folder``: the stub checks the arguments against the real
methods' signatures, records them and copies the uploaded folder into a local "repo" folder. Everything
that builds what is uploaded (data files, cards, the token read from ``HF_TOKEN``) is the real code path,
and the tests read the uploaded folder back with ``datasets.load_dataset`` and ``DatasetCard.load``.
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_filter import make_sample_dir
from wandb_runs import offline_run

from conj_train.config.parser import build_config
from conj_train.errors import ConjError
from conj_train.io import iter_jsonl, read_json

TOKEN = "hf_stub_token_not_real_0123456789"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The Hub's two network calls stubbed by a local folder per repo (see the module docstring)."""
    from huggingface_hub import HfApi

    root, calls = tmp_path / "hub", []
    real = {name: inspect.signature(getattr(HfApi, name)) for name in ("create_repo", "upload_folder")}

    def create_repo(self, repo_id, **kwargs):
        real["create_repo"].bind(self, repo_id, **kwargs)  # the real method takes these arguments
        calls.append(("create_repo", repo_id, kwargs))
        (root / repo_id).mkdir(parents=True, exist_ok=True)
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        real["upload_folder"].bind(self, **kwargs)
        calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        shutil.copytree(kwargs["folder_path"], root / kwargs["repo_id"], dirs_exist_ok=True)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return SimpleNamespace(root=root, calls=calls)


def _check_calls(hub: SimpleNamespace, repo_id: str) -> Path:
    """Both calls went to ``repo_id`` as a dataset repo with the environment's token; returns the repo."""
    assert [(c[0], c[1]) for c in hub.calls] == [("create_repo", repo_id), ("upload_folder", repo_id)]
    for _, _, kwargs in hub.calls:
        assert kwargs["token"] == TOKEN and kwargs["repo_type"] == "dataset"
    assert hub.calls[0][2]["exist_ok"] is True
    return hub.root / repo_id


def _no_token_in(*folders: Path) -> None:
    for folder in folders:
        for f in folder.rglob("*"):
            if f.is_file():
                assert TOKEN.encode() not in f.read_bytes(), f


# --- sampling ---------------------------------------------------------------------------------


def _sample(tiny_model_dir: Path, tmp_path: Path, **kw: object):
    from conj_train.sample.run import SampleConfig, run_sample

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}: a fruit?", "chosen": f"apple {i}",
                                        "rejected": f"hammer {i}"}) + "\n" for i in range(3)))
    cfg = SampleConfig(model_name_or_path=str(tiny_model_dir), dataset_name=str(data),
                       output_dir=str(tmp_path / "sample"), n=2, hint_samples=1, max_new_tokens=6,
                       progress=False, threads=1, hint_reading="code", **kw)
    cfg.validate()
    return run_sample(cfg)


def test_sampling_logs_parse_rate_by_kind_to_offline_wandb(tiny_model_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)  # no key, no mode: offline all the same
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    res = _sample(tiny_model_dir, tmp_path, report_to="wandb")
    run = offline_run(tmp_path / "sample")
    counts = read_json(tmp_path / "sample" / "manifest.json")["counts"]
    assert run["job_type"] == "sample" and res.complete
    # The code reading wraps a hint output into the hinted verdict's JSON: those all parse.
    assert counts["share_parseable_by_kind"]["hint_correct"] == 1.0 > counts["share_parseable_by_kind"]["repeated"]
    for kind, share in counts["share_parseable_by_kind"].items():
        assert run["logged"][f"sample/parse_rate/{kind}"] == share
        assert run["logged"][f"sample/judgments/{kind}"] == counts["by_kind"][kind]
    assert run["logged"]["sample/parse_rate/all"] == counts["share_parseable"]
    assert run["logged"]["sample/parse_rate_by_kind/_type"] == "table-file"
    assert run["config"]["n"] == 2 and run["config"]["hint_reading"] == "code"


def test_sampling_pushes_its_judgments_with_a_card(tiny_model_dir: Path, tmp_path: Path, hub) -> None:
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    _sample(tiny_model_dir, tmp_path, push_to_hub=True, hub_repo_id="someone/judgments")
    repo = _check_calls(hub, "someone/judgments")
    out = tmp_path / "sample"
    local = [r for p in sorted((out / "judgments").glob("*.jsonl")) for r in iter_jsonl(p)]
    pushed = load_dataset(str(repo), "judgments", split="train")
    assert sorted(pushed["judgment_id"]) == sorted(r["judgment_id"] for r in local) and len(local) == 12
    assert load_dataset(str(repo), "prompts", split="train").num_rows == 3
    card = DatasetCard.load(repo / "README.md")
    assert {c["config_name"] for c in card.data.configs} == {"judgments", "prompts"}
    assert card.data.language == ["zh"] and "| repeated | 6 |" in card.text and "2410.03742" in card.text
    assert read_json(repo / "manifest.json") == read_json(out / "manifest.json")
    assert not list(out.glob(".hub-*"))  # the staging folder is gone
    _no_token_in(out, repo)


def test_push_needs_a_repo_id_and_the_token_in_the_environment(tiny_model_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from conj_train.sample.run import SampleConfig

    base = {"model_name_or_path": str(tiny_model_dir), "dataset_name": "x.jsonl", "output_dir": str(tmp_path)}
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ConjError, match="HF_TOKEN"):
        SampleConfig(**base, push_to_hub=True, hub_repo_id="a/b").validate()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(ConjError, match="hub_repo_id"):
        SampleConfig(**base, push_to_hub=True).validate()
    with pytest.raises(ConjError, match="report_to"):
        SampleConfig(**base, report_to="tensorboard").validate()


# --- filter -----------------------------------------------------------------------------------


def _filter(tmp_path: Path, tiny_model_dir: Path, **kw: object):
    from conj_train.filter.run import FilterConfig, run_filter

    sample = make_sample_dir(tmp_path / "sample", tiny_model_dir)
    cfg = build_config(FilterConfig, {"dataset_name": str(sample), "output_dir": str(tmp_path / "filter"),
                                      "validation_share": 0.3, **kw})
    return run_filter(cfg)


def test_filter_logs_pairs_by_type_and_balance_to_wandb(tmp_path: Path, tiny_model_dir: Path) -> None:
    _filter(tmp_path, tiny_model_dir, report_to="wandb", balance=True)
    report = read_json(tmp_path / "filter" / "report.json")
    run = offline_run(tmp_path / "filter")
    logged = run["logged"]
    assert run["job_type"] == "filter"
    assert {k: logged[f"filter/pairs/{k}"] for k in report["pairs_by_type"]} == report["pairs_by_type"]
    assert logged["filter/pairs_total"] == report["pairs_total"] > 0
    for split, labels in report["label_balance"]["after"].items():
        assert logged[f"filter/balance/{split}/label_1"] == labels["label_1"]
        assert logged[f"filter/balance/{split}/label_2"] == labels["label_2"]
    assert logged["filter/balance/train/label_1_share"] == 0.5  # balance: on
    assert logged["filter/pairs_by_type/_type"] == "table-file"


def test_filter_pushes_the_pair_dataset_with_a_card(tmp_path: Path, tiny_model_dir: Path, hub) -> None:
    from datasets import load_dataset, load_from_disk
    from huggingface_hub import DatasetCard

    res = _filter(tmp_path, tiny_model_dir, push_to_hub=True, hub_repo_id="someone/pairs", hub_private=True)
    repo = _check_calls(hub, "someone/pairs")
    assert hub.calls[0][2]["private"] is True and "pushed the pair dataset" in res.summary
    local, pushed = load_from_disk(str(tmp_path / "filter" / "dataset")), load_dataset(str(repo))
    assert set(pushed) == {"train", "validation"}
    for split in pushed:
        assert pushed[split].to_list() == local[split].to_list()
    report = read_json(tmp_path / "filter" / "report.json")
    card = DatasetCard.load(repo / "README.md")
    for pair_type, n in report["pairs_by_type"].items():
        assert f"| {pair_type} | {n} |" in card.text
    assert Counter(local["train"]["pair_type"]) + Counter(local["validation"]["pair_type"]) == Counter(
        {k: v for k, v in report["pairs_by_type"].items() if v})
    assert "How the pairs were built" in card.text and "`code` preset" in card.text
    assert card.data.task_categories == ["text-generation"] and card.data.size_categories == ["n<1K"]
    assert read_json(repo / "report.json") == report
    _no_token_in(tmp_path / "filter", repo)


def test_a_finished_filter_run_is_pushed_by_rerunning_it(tmp_path: Path, tiny_model_dir: Path, hub) -> None:
    _filter(tmp_path, tiny_model_dir)
    assert not hub.calls
    again = _filter(tmp_path, tiny_model_dir, push_to_hub=True, hub_repo_id="someone/pairs")
    assert again.skipped and (hub.root / "someone/pairs" / "README.md").is_file()


# --- evaluation -------------------------------------------------------------------------------


def _eval(tiny_model_dir: Path, tmp_path: Path, **kw: object):
    from conj_train.evaluate.run import EvalConfig, run_eval

    data = tmp_path / "fruit.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}: a fruit?", "chosen": f"apple {i}",
                                        "rejected": f"hammer {i}"}) + "\n" for i in range(3)))
    cfg = EvalConfig(model_name_or_path=f"tiny={tiny_model_dir}", dataset_name=str(data),
                     output_dir=str(tmp_path / "eval"), max_new_tokens=4, progress=False, threads=1,
                     transfer=False, **kw)
    cfg.validate()
    return run_eval(cfg)


def test_eval_logs_its_comparison_table_to_wandb(tiny_model_dir: Path, tmp_path: Path) -> None:
    res = _eval(tiny_model_dir, tmp_path, report_to="wandb")
    row = res.metrics["comparison"][0]
    run = offline_run(tmp_path / "eval")
    logged = run["logged"]
    assert run["job_type"] == "eval"
    assert logged["eval/tiny/fruit/pairs"] == row["pairs"] == 3
    for key in ("accuracy_avg", "consistency", "parse_failure_rate"):
        assert logged[f"eval/tiny/fruit/{key}"] == row[key]
    assert logged["eval/comparison/_type"] == "table-file" and logged["eval/comparison/nrows"] == 1
    table = json.loads((run["folder"] / "files" / logged["eval/comparison/path"]).read_text())
    assert table["columns"][:3] == ["model", "kind", "dataset"] and table["data"][0][:3] == ["tiny", "judge", "fruit"]


def test_eval_pushes_metrics_and_judgments_with_a_card(tiny_model_dir: Path, tmp_path: Path, hub) -> None:
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    res = _eval(tiny_model_dir, tmp_path, push_to_hub=True, hub_repo_id="someone/results")
    repo = _check_calls(hub, "someone/results")
    assert read_json(repo / "metrics.json") == res.metrics == read_json(tmp_path / "eval" / "metrics.json")
    assert (repo / "summary.md").read_text() == (tmp_path / "eval" / "summary.md").read_text()
    records = load_dataset(str(repo), "tiny", split="train")
    assert records.num_rows == 6 and set(records["swapped"]) == {False, True}  # 3 pairs x both orders
    card = DatasetCard.load(repo / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["tiny"]
    assert "How the judges were run" in card.text and "| tiny | judge | fruit |" in card.text
    _no_token_in(tmp_path / "eval", repo)

    # RewardBench's own result files go up where the run wrote them (this toy set has none: one is made).
    from conj_train.evaluate.hub import push_results

    leaderboard = tmp_path / "eval" / "rewardbench" / "fruit" / "eval-set" / "tiny.json"
    leaderboard.parent.mkdir(parents=True)
    leaderboard.write_text('{"model": "tiny", "chat": 0.5}')
    push_results(tmp_path / "eval", res.metrics, repo_id="someone/results2", private=None)
    assert (hub.root / "someone/results2/rewardbench/fruit/eval-set/tiny.json").read_text() == leaderboard.read_text()
