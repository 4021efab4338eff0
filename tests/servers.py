"""Starting an OpenAI-compatible server (``transformers serve``, vLLM's) for a test, on loopback.

The server's output goes to a log file, never to a pipe: a pipe nobody reads fills up and stalls the
server. The server is ready when ``GET /health`` answers; a server that exits first fails the test
with the end of its log.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def openai_server(command: Sequence[str], *, port: int, log: Path, env: dict[str, str], name: str,
                  ready_within_s: float) -> Iterator[str]:
    """Run ``command`` (a server listening on 127.0.0.1:``port``) until the block ends; yields the API root."""
    with open(log, "w") as sink:
        proc = subprocess.Popen(list(command), env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited ({proc.returncode}): {log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} did not come up in {ready_within_s:.0f} s: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
