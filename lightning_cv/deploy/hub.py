"""Upload a model folder to the Hugging Face Hub with ``huggingface_hub``: private by default, one commit.

The endpoint is the Hub's, or ``HF_ENDPOINT`` when set (a self-hosted mirror, or a local test server); the token is
``huggingface_hub``'s (``HF_TOKEN``, or the one ``hf auth login`` saved). Every failure is one line that says what to
do; the local folder is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HubUploadError", "check_repo_id", "hub_token", "push_folder"]


class HubUploadError(OSError):
    """The Hub, or the network on the way to it, refused an upload (the local folder is left as it is)."""


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it is a valid Hub model id (``name`` or ``org/name``), else a one-line ``ValueError``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"`--push_to_hub` {repo_id!r} is not a valid Hub repository id ({str(err).splitlines()[0]}). Use "
            "'org/name' or 'name': letters, digits, '-', '_' and '.', at most 96 characters."
        ) from None
    return repo_id


def hub_token() -> str:
    """The Hub token ``huggingface_hub`` would use, or a one-line error saying how to give one."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ValueError(
            "`--push_to_hub` needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`. "
            "Without `--push_to_hub` the folder is written locally only."
        )
    return token


def push_folder(folder: str | os.PathLike[str], repo_id: str, *, private: bool = True, commit_message: str) -> str:
    """Create ``repo_id`` (private unless ``private=False``; an existing repository is kept) and upload every file of
    ``folder`` in one commit; returns the commit's URL.

    Raises:
        HubUploadError: the Hub (or the network) refused, with the Hub's message and the folder left as it is.
    """
    from huggingface_hub import HfApi

    token = hub_token()
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message
        )
    except Exception as err:  # HTTP errors, connection errors, timeouts: the library raises many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HubUploadError(
            f"Uploading to the Hub repository '{repo_id}' failed ({type(err).__name__}: {first}). The folder "
            f"'{Path(folder)}' is complete; upload it later with `hf upload {repo_id} {folder}`, or run the command "
            "again once the network or the token is fixed."
        ) from err
    return str(getattr(commit, "commit_url", commit))
