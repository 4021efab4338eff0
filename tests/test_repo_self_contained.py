"""The repository is self-contained: no file cites a document outside it, only tests read the shared
public data, and every ``docs/<page>.md#anchor`` that a file cites exists.

A clone has no notes beside it: the method lives in docs/method.md, and the public test files the
tests read (``CONJ_SHARED_DATA``, tests/conftest.py) are listed in docs/real-model.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Documents that only existed outside the repository; no file may cite them. (Spelled with character
# classes so that a plain grep for the names finds no hit here either.)
OUTSIDE_DOCS = re.compile(r"shared[/]docs|conj[-]spec|ancho[r]s\.md|ancho[r]s Part [AB]", re.IGNORECASE)
# The shared public data folder beside a checkout: tests may read it, nothing else may name it.
SHARED_DATA = re.compile(r"\.\./shared\b|/work/shared\b")
# "docs/method.md#anchor" (any page of docs/), and the further "#anchor"s of the same citation
# ("..., #splits").
DOC_CITATION = re.compile(r"([a-z0-9-]+\.md)#([a-z0-9-]+)((?:(?:,| and| to) #[a-z0-9-]+)*)")
ANCHOR_ID = re.compile(r'<a id="([a-z0-9-]+)"></a>')
HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


def _section_ids(markdown: str) -> set[str]:
    """A page's section ids: explicit ``<a id>`` tags and the headings' slugs (GitHub's rule, ASCII)."""
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in HEADING.findall(markdown)}
    return set(ANCHOR_ID.findall(markdown)) | slugs


def _repo_text_files() -> dict[str, str]:
    """Path -> text of every file git tracks or would track (untracked but not ignored), binaries left out."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    files: dict[str, str] = {}
    for name in sorted(set(out.decode().split("\0")) - {""}):
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet staged
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return files


def _hits(pattern: re.Pattern[str], files: dict[str, str]) -> list[str]:
    return [f"{name}:{n}: {line.strip()[:120]}" for name, text in files.items() if name != THIS
            for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]


@pytest.fixture(scope="module")
def repo_files() -> dict[str, str]:
    files = _repo_text_files()
    assert "docs/method.md" in files and "conj_train/verdicts/parse.py" in files  # the scan sees the repository
    return files


def test_no_file_cites_documents_outside_the_repository(repo_files: dict[str, str]) -> None:
    assert _hits(OUTSIDE_DOCS, repo_files) == []


def test_only_tests_name_the_shared_data_folder(repo_files: dict[str, str]) -> None:
    outside_tests = {k: v for k, v in repo_files.items() if not k.startswith("tests/")}
    assert _hits(SHARED_DATA, outside_tests) == []


def test_every_cited_doc_section_exists(repo_files: dict[str, str]) -> None:
    method = _section_ids(repo_files["docs/method.md"])
    assert {"pair-construction", "verdict-parsing", "training-objective", "evaluation-protocol"} <= method
    cited: dict[tuple[str, str], set[str]] = {}
    for name, text in repo_files.items():
        for m in DOC_CITATION.finditer(text if name != THIS else ""):
            for anchor in [m.group(2), *re.findall(r"#([a-z0-9-]+)", m.group(3))]:
                cited.setdefault((f"docs/{m.group(1)}", anchor), set()).add(name)
    # The code cites the method page throughout; a broken pattern would find next to nothing.
    assert len({anchor for page, anchor in cited if page == "docs/method.md"}) >= 10
    missing = {f"{page}#{anchor}": sorted(names) for (page, anchor), names in cited.items()
               if page not in repo_files or anchor not in _section_ids(repo_files[page])}
    assert missing == {}
    # The page's own links point at its sections too.
    assert set(re.findall(r"\]\(#([a-z0-9-]+)\)", repo_files["docs/method.md"])) <= method


def test_the_patterns_catch_what_they_forbid() -> None:
    assert OUTSIDE_DOCS.search("see conj" "-spec 6.2") and OUTSIDE_DOCS.search("(ancho" "rs Part B section 1)")
    assert OUTSIDE_DOCS.search("../shared" "/docs/cpu-notes.md") and not OUTSIDE_DOCS.search("docs/method.md")
    assert SHARED_DATA.search("llmbar=../shared/data/llmbar/natural.json")
    assert not SHARED_DATA.search("data/llmbar/natural.json") and not SHARED_DATA.search("../shared_x")
    m = DOC_CITATION.search("(docs/method.md#pair-construction, #length-rule and #splits)")
    assert m is not None and m.groups()[:2] == ("method.md", "pair-construction")
    assert re.findall(r"#([a-z0-9-]+)", m.group(3)) == ["length-rule", "splits"]
    assert _section_ids('<a id="x-y"></a>\n## Where each definition comes from\n') == {
        "x-y", "where-each-definition-comes-from"}
