"""Reading back what a wandb run logged offline, from the run's own ``.wandb`` file.

wandb 0.20-0.31 write no ``wandb-summary.json`` for an offline run and no longer ship a Python
reader of their transaction log, so the tests read it here: a LevelDB-style log (7-byte file header
``:W&B``, 32 KiB blocks of records with a 7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST)
whose records are wandb's own ``Record`` protobuf messages.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """The ``wandb_internal_pb2.Record`` messages of one ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos: pos + 7])
        if length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        buf += data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind in (_FULL, _LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def offline_run(stage_dir: Path) -> dict[str, Any]:
    """The single offline run a stage wrote under ``stage_dir/_wandb``: its job type, its config and
    every key it logged (history and summary merged; tables as their wandb descriptors).

    ``run.finish()`` can return before wandb's service has written the run's log to disk (seen with
    wandb 0.31 on a loaded machine: a 7-byte file), so the service is shut down first; the next
    ``wandb.init`` starts a new one.
    """
    import wandb

    wandb.teardown()
    files = sorted((stage_dir / "_wandb").rglob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    out: dict[str, Any] = {"logged": {}, "config": {}, "job_type": None}
    for rec in records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["logged"].update({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["logged"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":  # the run's start record carries the config given to wandb.init
            out["job_type"] = rec.run.job_type
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    out["folder"] = files[0].parent
    return out
