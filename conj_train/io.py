"""Small, durable file helpers shared by every stage: atomic writes, JSONL, hashes, manifests."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(obj: Any, **options: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False, **options)``, always encodable as UTF-8.

    A file name that is not valid UTF-8 reaches Python as lone surrogates, which UTF-8 cannot
    encode; such a value is written with ``\\u`` escapes instead (valid JSON, read back as the same
    string). Every other value keeps its readable form, and its hash.
    """
    text = json.dumps(obj, ensure_ascii=False, **options)
    return json.dumps(obj, **options) if _SURROGATE.search(text) else text


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex SHA-256 of ``obj`` serialised as canonical JSON (sorted keys, no whitespace)."""
    blob = json_text(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def file_hash(path: str | Path, length: int = 16) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented UTF-8 JSON."""
    atomic_write_text(path, json_text(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _open_text(path: Path, mode: str = "rt"):
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def iter_jsonl(path: str | Path, *, drop_partial_last_line: bool = False) -> Iterator[dict]:
    """Yield the objects of a JSONL(.gz) file.

    With ``drop_partial_last_line`` a final line that is not newline-terminated (a write cut off by a
    crash) is skipped instead of raising; any other bad line still raises ``ValueError``.
    """
    path = Path(path)
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if drop_partial_last_line and not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Atomically write ``rows`` as JSONL; returns the number of rows written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json_text(row) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


class JsonlAppender:
    """Append-only JSONL writer that makes each batch durable (flush + fsync) before returning.

    A crash can leave at most one partial last line, which :func:`iter_jsonl` with
    ``drop_partial_last_line=True`` skips; :meth:`open` truncates such a line before appending.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_partial_last_line(self.path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write_batch(self, rows: Iterable[dict]) -> None:
        """Append ``rows`` and fsync them."""
        for row in rows:
            self._f.write(json_text(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline and cut everything after it.
        pos = size - 1
        while pos > 0:
            step = min(4096, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                f.truncate(pos - step + idx + 1)
                return
            pos -= step
        f.truncate(0)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a stage's output, for manifests."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("conj-train", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
                 "deepspeed", "vllm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
