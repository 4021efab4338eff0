"""Trackers (wandb) for every stage: training through the Trainer's ``report_to``, the other stages
through :func:`log_stage`, with the same offline default and the same care for secrets.

Sampling logs its parse rate by judgment kind, the filter its pairs by type and label balance, the
evaluation its comparison table; each stage calls :func:`log_stage` once its run is complete, with the
stage's ``report_to`` (:class:`conj_train.config.PublishOptions`). transformers' integrations log a
Trainer only; a stage that is not a training loop has nothing to hand them, hence this small module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Token *names* of a tokenizer are not credentials; every other string field ending in "token"
# (hub_token...) or naming a key/secret/password is.
_NOT_SECRET = {"pad_token", "eos_token", "bos_token", "unk_token"}


def is_secret(key: str, value: Any) -> bool:
    """Whether a config field holds a credential (a set ``*token``, api key, secret or password)."""
    k = key.lower()
    if not isinstance(value, str) or not value or k in _NOT_SECRET:
        return False
    return k.endswith("token") or any(w in k for w in ("api_key", "apikey", "secret", "password"))


def redact(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a flat config dict with every set credential field replaced by ``"<redacted>"``."""
    return {k: "<redacted>" if is_secret(k, v) else v for k, v in values.items()}


def wants_wandb(report_to: Sequence[str] | str | None) -> bool:
    """Whether ``report_to`` (a name or a list, as transformers takes it) asks for wandb."""
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return "wandb" in targets or "all" in targets


def setup_wandb(report_to: Sequence[str] | str | None, output_dir: str | Path) -> str | None:
    """Prepare wandb when it is asked for; returns its mode (``"offline"``/``"online"``) or None.

    Without ``WANDB_API_KEY`` in the environment (and no explicit ``WANDB_MODE``) wandb runs offline,
    so training never blocks on a login prompt or a network call; sync later with ``wandb sync``. The
    key itself is never read into the config, printed or written anywhere by this package.
    """
    if not wants_wandb(report_to):
        return None
    if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_DIR", str(Path(output_dir)))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    return "online" if os.environ["WANDB_MODE"] not in ("offline", "disabled", "dryrun") else "offline"


def log_stage(report_to: Sequence[str] | str | None, *, stage: str, output_dir: str | Path,
              config: Mapping[str, Any], metrics: Mapping[str, float | int],
              tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> str | None:
    """Log one finished stage as its own wandb run (job type ``stage``); returns the mode or None.

    ``metrics`` are flat scalar keys (``sample/parse_rate/repeated``...), logged once and so also the
    run's summary; ``tables`` are lists of rows, logged as ``wandb.Table``. The run is written under
    ``output_dir/_wandb`` (not ``WANDB_DIR``, which a training run in the same process may have set to
    its own folder), offline without ``WANDB_API_KEY`` unless ``WANDB_MODE`` says otherwise; the
    config is logged with credentials redacted.
    """
    if not wants_wandb(report_to):
        return None
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    folder = Path(output_dir) / "_wandb"
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "conj-train"), job_type=stage,
                     name=f"{stage}-{Path(output_dir).resolve().name}", dir=str(folder), mode=mode,
                     config=redact(dict(config)), reinit="create_new")
    try:
        logged: dict[str, Any] = dict(metrics)
        for key, rows in (tables or {}).items():
            columns = list(dict.fromkeys(c for r in rows for c in r))
            logged[key] = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])
        run.log(logged)
    finally:
        run.finish()
    return "offline" if mode in ("offline", "dryrun", "disabled") else "online"


def _cell(value: Any) -> Any:
    """A table cell wandb can store: numbers and strings as they are, anything else as its text."""
    return value if value is None or isinstance(value, (int, float, str)) else str(value)
