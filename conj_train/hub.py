"""Pushing a stage's result to the Hugging Face Hub as a dataset repo, as TRL's dataset scripts and
RewardBench do: the files people load, and a dataset card saying how they were made.

A stage builds what is uploaded in a staging folder (:func:`staging_folder`: data files hard-linked
where the file system allows, the card as ``README.md``); :func:`push_folder` then makes the repo and
uploads the folder with huggingface_hub's own calls (``HfApi.create_repo``, ``HfApi.upload_folder``).
The token comes from the ``HF_TOKEN`` environment variable only: it is passed explicitly, so neither a
token file nor a cached login is read, and it is never written anywhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError

CITATION = """@misc{ye2024beyondscalarrewardmodel,
      title={Beyond Scalar Reward Model: Learning Generative Judge from Preference Data},
      author={Ziyi Ye and Xiangsheng Li and Qiuchi Li and Qingyao Ai and Yujia Zhou and Wei Shen and Dong Yan and Yiqun Liu},
      year={2024},
      eprint={2410.03742},
      archivePrefix={arXiv},
      primaryClass={cs.CL},
      url={https://arxiv.org/abs/2410.03742},
}"""


def hub_token() -> str:
    """The Hub token from ``HF_TOKEN``; a ConjError when it is not set."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ConjError("pushing to the Hub needs a token in the HF_TOKEN environment variable")
    return token


def looks_like_hub_id(source: str) -> bool:
    """Whether a data source names a Hub repo (``owner/name``) rather than a local file or folder."""
    return (source.count("/") == 1 and not source.startswith((".", "/", "~"))
            and not Path(source).expanduser().exists())


@contextmanager
def staging_folder(output_dir: str | Path) -> Iterator[Path]:
    """A temporary folder inside ``output_dir`` (same file system, so data files can be hard-linked),
    removed afterwards: the stage folder itself only ever holds the stage's own outputs."""
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".hub-") as tmp:
        yield Path(tmp)


def stage_file(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest`` in a staging folder: a hard link, or a copy across file systems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def dataset_card(card_data: Any, body: str) -> Any:
    """A ``huggingface_hub.DatasetCard`` from its metadata (``DatasetCardData``) and Markdown body."""
    from huggingface_hub import DatasetCard

    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body.strip()}\n")


def push_folder(folder: Path, repo_id: str, *, private: bool | None, commit_message: str,
                repo_type: str = "dataset") -> str:
    """Create ``repo_id`` if missing and upload ``folder`` to it as one commit; returns the repo's URL."""
    from huggingface_hub import HfApi

    token = hub_token()
    api = HfApi()
    url = api.create_repo(repo_id, token=token, private=private, repo_type=repo_type, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type, token=token,
                      commit_message=commit_message)
    return str(url)


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def template_language(template: str | None) -> str | None:
    """The language code of a judge template (``zh`` for ``conj-zh``), or None when it cannot be read."""
    from conj_train.prompts.templates import get_template

    try:
        return get_template(template or "conj-zh").language.code
    except (ConjError, OSError):  # a user template file that moved: the card just has no language
        return None
