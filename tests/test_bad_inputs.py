"""Every ``conj`` command fed bad input answers one clear stderr line and exit 2, never a traceback.

One table of (command line, expected words) cases, run in-process through ``conj_train.cli.main`` so
the whole table costs one torch import. Cases whose input is bad only in its content (a lone
surrogate in a row) are not errors: the row is skipped with a reason (see the last tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conj_train.cli import main

ROWS = [{"prompt": f"Question {i}: name a fruit.", "chosen": f"apple {i}.", "rejected": f"hammer {i}."}
        for i in range(4)]


class Ctx:
    """Paths a case can use: a tiny model, a good data file, a scratch folder."""

    def __init__(self, tmp: Path, model: Path) -> None:
        self.tmp, self.model = tmp, model
        self.data = tmp / "pairs.jsonl"
        self.data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        self.a_file = tmp / "a_file.txt"
        self.a_file.write_text("x")
        self.data_dir = tmp / "dd"  # a data folder (one file of pairs)
        self.data_dir.mkdir()
        (self.data_dir / "pairs.jsonl").write_text(self.data.read_text())

    def stage_data(self) -> str:
        """A copy of the data inside what a pipeline into ``tmp`` uses as its sample stage folder."""
        (self.tmp / "sample").mkdir(exist_ok=True)
        (self.tmp / "sample" / "d.jsonl").write_text(self.data.read_text())
        return str(self.tmp / "sample" / "d.jsonl")

    def loop(self) -> Path:
        """A symbolic link loop (a -> b -> a)."""
        (self.tmp / "loop-b").symlink_to(self.tmp / "loop-a")
        (self.tmp / "loop-a").symlink_to(self.tmp / "loop-b")
        return self.tmp / "loop-a"

    def filter_dir(self) -> str:
        """A filter-stage output folder (the pairs training reads)."""
        from test_train import write_pairs

        return str(write_pairs(self.tmp / "f", 4, 0))

    def recipe(self, name: str, values: dict | str | bytes) -> str:
        """Write a recipe (a mapping as YAML, or raw text/bytes) and return its path."""
        p = self.tmp / name
        if isinstance(values, bytes):
            p.write_bytes(values)
        else:
            p.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
        return str(p)

    def sample(self, **over: object) -> list[str]:
        base = {"model_name_or_path": str(self.model), "dataset_name": str(self.data), "output_dir": str(self.tmp / "s"),
                "n": 1, "hint_samples": 0, "max_new_tokens": 4, "progress": False}
        return ["sample", "--config", self.recipe("sample.yaml", {**base, **over})]

    def eval(self, *extra: str) -> list[str]:
        return ["eval", "--model", str(self.model), "--dataset", str(self.data), "--output",
                str(self.tmp / "e"), "--max_new_tokens", "4", "--progress", "false", *extra]

    def train(self, *extra: str, model: str | None = None, kind: str = "train") -> list[str]:
        return [kind, "--model_name_or_path", model or str(self.model), "--dataset_name", str(self.tmp / "f"),
                "--output_dir", str(self.tmp / "t"), "--report_to", "none", *extra]

    def bad_model(self, what: str) -> str:
        """A model folder broken in one way."""
        import shutil

        d = self.tmp / f"model-{what}"
        if what == "empty":
            d.mkdir()
        elif what == "no-config":
            shutil.copytree(self.model, d)
            (d / "config.json").unlink()
        elif what == "truncated":
            shutil.copytree(self.model, d)
            w = d / "model.safetensors"
            w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        elif what == "huge-config":
            shutil.copytree(self.model, d)
            cfg = json.loads((d / "config.json").read_text())
            cfg["num_hidden_layers"] = 10_000_000
            (d / "config.json").write_text(json.dumps(cfg))
        elif what == "remote-code":
            shutil.copytree(self.model, d)
            cfg = json.loads((d / "config.json").read_text())
            cfg.update(model_type="conj-custom", auto_map={"AutoConfig": "custom.CustomConfig",
                                                           "AutoModelForCausalLM": "custom.CustomModel"})
            (d / "config.json").write_text(json.dumps(cfg))
        return str(d)


NOT_UTF8 = b"n: 2\nsystem_prompt: \xff\xfe caf\xe9\n"
# 9 levels of 9 aliases: under 400 bytes, a billion values once expanded.
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{k}: &{k} [{', '.join([f'*{p}'] * 9)}]\n" for p, k in zip("abcdefgh", "bcdefghi", strict=True))
Case = tuple[Callable[[Ctx], list[str]], str]

CASES: dict[str, Case] = {
    # data
    "data-missing-file": (lambda c: ["data", "check", str(c.tmp / "nope.jsonl")], "no such file"),
    "data-bad-format": (lambda c: ["data", "check", str(c.data), "--format", "bogus"], "format"),
    "data-bad-field": (lambda c: ["data", "check", str(c.data), "--field", "prompt"], "KEY=NAME"),
    "data-multi-turn-bogus": (lambda c: ["data", "check", str(c.data), "--multi-turn", "bogus"], "invalid choice"),
    "data-no-source": (lambda c: ["data", "check"], "required"),
    "convert-into-symlink-loop": (lambda c: ["data", "convert", str(c.data), "-o", str(c.loop() / "x.jsonl")],
                                  "symbolic link loop"),
    "sample-output-symlink-loop": (lambda c: c.sample(output_dir=str(c.loop())), "symbolic link loop"),
    "convert-onto-input": (lambda c: ["data", "convert", str(c.data), "-o", str(c.data)], "is the input"),
    "convert-to-folder": (lambda c: ["data", "convert", str(c.data), "-o", str(c.tmp)], "is a folder"),
    "convert-under-file": (lambda c: ["data", "convert", str(c.data), "-o", str(c.a_file / "x.jsonl")],
                           "not a folder"),
    "convert-into-input-folder": (lambda c: ["data", "convert", str(c.data_dir), "-o",
                                             str(c.data_dir / "c.jsonl")], "inside the input"),
    # no stage writes where it reads: output equal to, inside or around an input
    "sample-output-is-data-folder": (lambda c: c.sample(dataset_name=str(c.data_dir), output_dir=str(c.data_dir)),
                                     "is the input"),
    "sample-output-contains-data": (lambda c: c.sample(output_dir=str(c.tmp)), "contains the input"),
    "sample-output-inside-model": (lambda c: c.sample(output_dir=str(c.model / "s")), "inside the input"),
    "filter-output-is-input": (lambda c: ["filter", "--dataset_name", str(c.data_dir), "--output_dir",
                                          str(c.data_dir)], "is the input"),
    "filter-output-inside-input": (lambda c: ["filter", "--dataset_name", str(c.data_dir), "--output_dir",
                                              str(c.data_dir / "f")], "inside the input"),
    "train-output-is-pairs": (lambda c: [*c.train(), "--dataset_name", c.filter_dir(), "--output_dir",
                                         str(c.tmp / "f")], "is the input"),
    "train-output-inside-pairs": (lambda c: [*c.train(), "--dataset_name", c.filter_dir(), "--output_dir",
                                             str(c.tmp / "f" / "t")], "inside the input"),
    "train-rm-output-contains-data": (lambda c: [*c.train(kind="train-rm"), "--dataset_name", str(c.data),
                                                 "--output_dir", str(c.tmp)], "contains the input"),
    "eval-output-is-data-folder": (lambda c: ["eval", "--model", str(c.model), "--dataset", str(c.data_dir),
                                              "--output", str(c.data_dir), "--progress", "false"], "is the input"),
    # sample: value types and bounds (one parser for every stage config)
    "sample-n-word": (lambda c: [*c.sample(), "--n", "four"], "n must be an integer"),
    "sample-old-key": (lambda c: c.sample(model="m"), "did you mean 'model_name_or_path'"),
    "sample-n-list": (lambda c: c.sample(n=[1, 2]), "n must be an integer"),
    "sample-n-float": (lambda c: c.sample(n=1.7), "n must be an integer"),
    "sample-n-bool": (lambda c: c.sample(n=True), "n must be an integer"),
    "sample-temperature-word": (lambda c: c.sample(temperature="hot"), "temperature must be a number"),
    "sample-field-map-string": (lambda c: c.sample(field_map="prompt"), "field_map must be a mapping"),
    "sample-batch-pairs-0": (lambda c: c.sample(batch_pairs=0), "batch_pairs must be >= 1"),
    "sample-max-pairs-negative": (lambda c: c.sample(max_pairs=-5), "max_pairs must be >= 1"),
    "sample-max-pairs-0": (lambda c: c.sample(max_pairs=0), "max_pairs must be >= 1"),
    "sample-recipe-not-utf8": (lambda c: ["sample", "--config", c.recipe("bad.yaml", NOT_UTF8)], "UTF-8"),
    "sample-recipe-bad-yaml": (lambda c: ["sample", "--config", c.recipe("bad.yaml", "n: [1,\n")],
                               "not valid YAML"),
    "sample-recipe-alias-bomb": (lambda c: ["sample", "--config", c.recipe("bomb.yaml", ALIAS_BOMB + "n: *i\n")],
                                 "aliases are expanded"),
    "eval-recipe-alias-bomb": (lambda c: ["eval", "--config", c.recipe("bomb.yaml", ALIAS_BOMB + "dataset_options: *i\n")],
                               "aliases are expanded"),
    "sample-temperature-inf": (lambda c: [*c.sample(), "--temperature", ".inf"], "temperature must be a finite number"),
    "sample-top-p-nan": (lambda c: c.sample(top_p=float("nan")), "top_p must be a finite number"),
    "eval-temperature-inf": (lambda c: c.eval("--temperature", ".inf"), "temperature must be a finite number"),
    "sample-shard-huge": (lambda c: [*c.sample(), "--shard", "0/10000000"], "at most"),
    "sample-no-usable-pairs": (lambda c: c.sample(dataset_name=c.recipe("none.jsonl", SURROGATE)), "no usable pairs"),
    "data-path-too-long": (lambda c: ["data", "check", str(c.tmp.joinpath(*["d" * 200] * 40))], "too long"),
    "sample-dtype-typo": (lambda c: [*c.sample(), "--dtype", "float99"], "dtype must be one of"),
    "eval-dtype-typo": (lambda c: c.eval("--dtype", "float99"), "dtype must be one of"),
    "sample-system-prompt-surrogate": (lambda c: ["sample", "--config", c.recipe("s.yaml", yaml.safe_dump(
        {"model_name_or_path": str(c.model), "dataset_name": str(c.data), "output_dir": str(c.tmp / "s")})
        + 'system_prompt: "\\ud800"\n')], "not valid text"),
    "sample-data-name-not-utf8": (lambda c: c.sample(dataset_name=c.recipe("d\udcff.jsonl", c.data.read_text())),
                                  "not valid text"),
    "tiny-model-huge": (lambda c: ["tiny-model", str(c.tmp / "tm"), "--hidden", "1000000"], "at most"),
    "sample-model-huge-config": (lambda c: c.sample(model_name_or_path=c.bad_model("huge-config")), "num_hidden_layers"),
    "eval-model-huge-config": (lambda c: [*c.eval(), "--model", c.bad_model("huge-config")], "num_hidden_layers"),
    "sample-output-is-file": (lambda c: c.sample(output_dir=str(c.a_file)), "is a file"),
    "sample-truncated-weights": (lambda c: c.sample(model_name_or_path=c.bad_model("truncated")), "cannot load"),
    # eval
    "eval-n-word": (lambda c: c.eval("--n", "many"), "n must be an integer"),
    "eval-prefill-number": (lambda c: c.eval("--prefill", "123"), "prefill must be a string"),
    "eval-max-pairs-negative": (lambda c: c.eval("--max_pairs", "-5"), "max_pairs must be >= 1"),
    "eval-output-is-file": (lambda c: [*c.eval(), "--output", str(c.a_file)], "is a file"),
    "eval-old-samples-key": (lambda c: c.eval("--samples", "3"), "did you mean 'n'"),
    # filter
    "filter-balance-maybe": (lambda c: ["filter", "--dataset_name", str(c.tmp), "--output_dir",
                                        str(c.tmp / "f2"), "--balance", "maybe"], "balance must be true or false"),
    "filter-no-sample-run": (lambda c: ["filter", "--dataset_name", str(c.tmp / "none"), "--output_dir",
                                        str(c.tmp / "f2")], "sample"),
    # train: TrlParser path
    "train-lr-word": (lambda c: c.train("--learning_rate", "fast"), "learning_rate"),
    "train-batch-0": (lambda c: c.train("--per_device_train_batch_size", "0"), "per_device_train_batch_size"),
    "train-beta-negative": (lambda c: c.train("--beta", "-1"), "beta"),
    "train-epochs-negative": (lambda c: c.train("--num_train_epochs", "-1"), "num_train_epochs"),
    "train-report-to-bogus": (lambda c: c.train("--report_to", "bogus"), "report_to"),
    "train-recipe-bad-yaml": (lambda c: ["train", "--config", c.recipe("t.yaml", "beta: [1,\n")],
                              "not valid YAML"),
    "train-lr-nan": (lambda c: c.train("--learning_rate", "nan"), "learning_rate must be a finite number"),
    "train-beta-inf": (lambda c: c.train("--beta", "inf"), "beta must be a finite number"),
    "train-rm-lr-inf": (lambda c: c.train("--learning_rate", "inf", kind="train-rm"), "finite"),
    "train-recipe-alias-bomb": (lambda c: ["train", "--config", c.recipe("bomb.yaml", ALIAS_BOMB + "run_name: *i\n")],
                                "aliases are expanded"),
    "train-recipe-not-utf8": (lambda c: ["train", "--config", c.recipe("t.yaml", NOT_UTF8)], "UTF-8"),
    "train-model-missing": (lambda c: c.train(model=str(c.tmp / "no-model")), "not found"),
    "train-model-empty": (lambda c: c.train(model=c.bad_model("empty")), "config.json"),
    "train-model-no-config": (lambda c: c.train(model=c.bad_model("no-config")), "config.json"),
    "train-model-huge-config": (lambda c: c.train(model=c.bad_model("huge-config")), "num_hidden_layers"),
    "train-model-remote-code": (lambda c: c.train(model=c.bad_model("remote-code")), "trust_remote_code"),
    "train-rm-lr-word": (lambda c: c.train("--learning_rate", "fast", kind="train-rm"), "learning_rate"),
    "train-rm-model-missing": (lambda c: c.train(model=str(c.tmp / "no-model"), kind="train-rm"), "not found"),
    # run: every section and path checked before the first stage
    "run-rounds-word": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.data),
        "heldout": str(c.data), "rounds": "abc"})], "rounds"),
    "run-eval-typo": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.data),
        "heldout": str(c.data), "eval": {"max_new_tokenz": 4}})], "max_new_tokenz"),
    "run-no-heldout": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.data)})], "heldout"),
    "run-missing-dataset": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.tmp / "none.jsonl"),
        "heldout": str(c.data)})], "no such file"),
    "run-launch-typo": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.data),
        "heldout": str(c.data), "launch": {"train": {"num_proceses": 2}}})], "num_proceses"),
    "run-launch-stage-typo": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.data),
        "heldout": str(c.data), "launch": {"trian": {"num_processes": 2}}})], "trian"),
    "run-launch-config-name-typo": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.data),
        "heldout": str(c.data), "launch": {"train": {"config_file": "zero4"}}})], "zero4"),
    "run-data-in-a-stage-folder": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp), "model_name_or_path": str(c.model), "dataset_name": c.stage_data(),
        "heldout": str(c.data)})], "contains the input"),
    "run-from-after-until": (lambda c: ["run", "--config", c.recipe("p.yaml", {
        "output_dir": str(c.tmp / "r"), "model_name_or_path": str(c.model), "dataset_name": str(c.data),
        "heldout": str(c.data)}), "--from", "eval", "--until", "sample"], "--from"),
    # the rest
    "tiny-model-hidden-0": (lambda c: ["tiny-model", str(c.tmp / "tm"), "--hidden", "0"], "hidden"),
    "tiny-model-under-file": (lambda c: ["tiny-model", str(c.a_file / "tm")], "not a folder"),
    "real-model-under-file": (lambda c: ["real-model", str(c.a_file / "rm")], "not a folder"),
    "recipe-copy-unknown": (lambda c: ["recipe", "copy", "dmeo", str(c.tmp / "exp")], "did you mean 'demo'"),
    "ablate-missing-file": (lambda c: ["ablate", str(c.tmp / "none.yaml"), "--base", str(c.a_file)], "not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, tiny_model_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    build, words = CASES[case]
    argv = build(Ctx(tmp_path, tiny_model_dir))
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("conj "), lines[0]
    assert words.lower() in lines[0].lower(), lines[0]


def test_unwritable_output_is_one_line(tmp_path: Path, tiny_model_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ctx = Ctx(tmp_path, tiny_model_dir)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["data", "convert", str(ctx.data), "-o", str(locked / "x.jsonl")]) == 2
    finally:
        locked.chmod(0o755)
    assert "not writable" in capsys.readouterr().err


SURROGATE = '{"prompt": "Q \\ud800", "chosen": "a", "rejected": "b"}\n'


def test_disk_full_mid_sample_is_one_line_and_the_rerun_completes(tmp_path: Path, tiny_model_dir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A real full disk: a 16 KiB tmpfs (needs root and a kernel that lets the test mount one)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        data = tmp_path / "d.jsonl"
        data.write_text("".join(json.dumps({"prompt": f"Question {i}: " + "x" * 200, "chosen": "yes " * 20,
                                            "rejected": "no " * 20}) + "\n" for i in range(40)))
        argv = ["sample", "--model", str(tiny_model_dir), "--dataset", str(data), "--output", str(disk / "s"),
                "--n", "1", "--max_new_tokens", "2", "--hint_samples", "0", "--threads", "1", "--progress", "false"]
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "No space left on device" in err[0]
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        assert main(argv) == 0  # the same command, once there is room, finishes the run
        from conj_train.io import read_json

        assert read_json(disk / "s" / "manifest.json")["counts"]["pairs"] == 40
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_lone_surrogate_row_is_skipped_as_invalid_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(SURROGATE + "".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["data", "check", str(data), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["skipped"] == {"invalid_text": 1} and info["rows_used"] == len(ROWS)
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(data), "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == len(ROWS)


def test_a_data_file_name_that_is_not_utf8_converts_and_reads_back(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Python keeps such a name's bytes as lone surrogates; the records name the file and must still be
    written (JSON escapes) and read back."""
    data = tmp_path / "d\udcff.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "o\udcfe.jsonl"
    assert main(["data", "convert", str(data), "-o", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(ROWS) and records[0]["meta"]["dataset"] == str(data)
    capsys.readouterr()
    assert main(["data", "check", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_used"] == len(ROWS)


def test_lone_surrogate_row_is_skipped_by_sampling_too(tmp_path: Path, tiny_model_dir: Path) -> None:
    from conj_train.io import read_json

    ctx = Ctx(tmp_path, tiny_model_dir)
    ctx.data.write_text(SURROGATE + "".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    assert main(ctx.sample(max_new_tokens=2, threads=1)) == 0
    manifest = read_json(tmp_path / "s" / "manifest.json")
    assert manifest["counts"]["pairs"] == 2 and manifest["input"]["ingest"]["skipped"] == {"invalid_text": 1}


def test_train_error_is_one_line_outside_pytest_too(tmp_path: Path) -> None:
    """No library warning ahead of the error line (pytest's own warning capture hides them in-process):
    a recipe with ``gradient_checkpointing`` (the shipped ones) used to print a two-line FutureWarning."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "conj_train", "train", "--model_name_or_path", str(tmp_path / "no-model"),
           "--dataset_name", str(tmp_path / "f"), "--output_dir", str(tmp_path / "t"), "--report_to", "none",
           "--gradient_checkpointing", "true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("conj train: error:"), proc.stderr[-2000:]


def test_an_error_line_built_from_a_huge_input_stays_short(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path.joinpath(*["d" * 200] * 18) / "x.jsonl"  # a 3,600-character path
    assert main(["data", "check", str(deep)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) <= 650 and "no such file" in err, err[:300]
