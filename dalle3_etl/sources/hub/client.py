"""The Hub client as this package uses it: the endpoint, client calls whose errors become this package's (with the
repo and revision in the message), and what both `resolve` and `download` ask the Hub: which commit a revision is,
which files a folder holds, how big a file is.

Imports ``huggingface_hub`` and ``httpx2`` when imported: so does every module of this package that talks to the
Hub, and they are imported on first Hub use only (see the package docstring).
"""

from __future__ import annotations

import os

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile

from dalle3_etl.sources.hub.errors import HubNotFoundError, HubUnavailableError


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub endpoint to use: explicit, else ``HF_ENDPOINT`` now, else the client's constant."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_call(what: str, fn, *args, **kwargs):
    """Run a client call, turning its errors into this package's (with the repo/revision in the message)."""
    try:
        return fn(*args, **kwargs)
    except RevisionNotFoundError as exc:
        raise HubNotFoundError(f"{what}: revision not found on the Hub") from exc
    except RepositoryNotFoundError as exc:
        raise HubNotFoundError(
            f"{what}: repository not found (or private/gated: log in with `hf auth login` or set HF_TOKEN)"
        ) from exc
    except EntryNotFoundError as exc:
        raise HubNotFoundError(f"{what}: no such path in the repo") from exc
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        raise HubUnavailableError(f"{what}: the Hub could not be reached or failed: {one_line(exc)}") from exc


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def resolve_commit(api: HfApi, repo_id: str, repo_type: str, revision: str | None) -> str:
    what = f"{repo_id}@{revision or constants.DEFAULT_REVISION}"
    info = hub_call(what, api.repo_info, repo_id, repo_type=repo_type, revision=revision)
    if not info.sha:
        raise HubUnavailableError(f"{what}: the Hub did not say which commit this revision is")
    return info.sha


def list_files(
    api: HfApi, what: str, repo_id: str, repo_type: str, commit: str, base: str, recursive: bool
) -> list[RepoFile]:
    entries = hub_call(
        what,
        lambda: list(
            api.list_repo_tree(repo_id, base or None, recursive=recursive, revision=commit, repo_type=repo_type)
        ),
    )
    return [e for e in entries if isinstance(e, RepoFile)]


def file_size(f: RepoFile) -> int:
    return int(f.lfs.size if f.lfs is not None else f.size)


__all__ = ["hub_endpoint", "hub_call", "one_line", "resolve_commit", "list_files", "file_size"]
