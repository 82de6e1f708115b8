"""Shards from the Hugging Face Hub: stream them into a conversion (``hf://`` inputs) or download them, verified.

Two ways in, both through the real ``huggingface_hub`` client (its HTTP session, retries, auth and endpoint):

* `resolve_hub_input` turns ``hf://datasets/<owner>/<name>[@<rev>]/<path or glob>`` into `HubShardSource`s, pinned
  to the commit the revision pointed at when resolved (``HfApi.repo_info`` then ``HfApi.list_repo_tree`` /
  ``HfApi.get_paths_info``; sizes and sha256 come from the LFS metadata of the listing). ``source.open()`` returns
  a `HubStream`: a non-seekable binary stream of the file read sequentially over HTTP (``/resolve/<commit>/<path>``
  through ``huggingface_hub.utils.http_stream_backoff``), which resumes with a ``Range`` request when the connection
  drops, computes the sha256 while streaming, and raises `HubIntegrityError` naming the file when the bytes read do
  not match the Hub's LFS metadata. With a keep dir (``--keep-tars DIR``, see `set_keep_dir`) the bytes are also
  written to ``DIR/<name>.part``, renamed to ``DIR/<name>`` only after a complete, verified read; a later open of the
  same file reads that verified copy instead of the network (still checking its sha256).

* `download` fetches ``data/data-NNNNNN.tar`` shards into a folder with ``hf_hub_download(..., local_dir=...)``
  (the client's own resume-on-dropped-connection, local-dir metadata, Xet when available), then checks each file's
  size and sha256 against the LFS metadata in a hashing thread pool while the other files are still downloading. A
  file that does not match is renamed ``<name>.corrupt`` (never picked up as a shard) and reported.

The endpoint is ``HF_ENDPOINT`` as set when the call is made (else ``huggingface_hub.constants.ENDPOINT``), passed
explicitly to every client call; the token is the client's usual one (``HF_TOKEN`` or ``hf auth login``) unless
given.
"""

import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Optional

import typer

from dalle3_etl.store.fsio import Root
from dalle3_etl.safetext import plain
from dalle3_etl.sources.base import SHARD_SUFFIXES, ShardSource, SourceError, natural_key, shard_id_for

__all__ = [
    "DEFAULT_REPO", "SHARD_PATTERN", "HubError", "HubNotFoundError", "HubUnavailableError", "HubIntegrityError",
    "HubTransferError", "ShardSelectionError", "HubShardSource", "HubStream", "DownloadResult",
    "resolve_hub_input", "resolve_hub_inputs", "open_verified_stream", "set_keep_dir", "with_keep_dir", "download",
    "parse_shard_selection", "add_cli",
]

logger = logging.getLogger(__name__)

DEFAULT_REPO = "ProGamerGov/synthetic-dataset-1m-dalle3-high-quality-captions"
SHARD_DIR = "data"
SHARD_PATTERN = "data/data-%06d.tar"
MAX_SHARD_INDEX = 999_999

#: Stream tuning (tests lower RETRY_WAIT).
CHUNK_SIZE = 1 << 20
MAX_RETRIES = 8  # consecutive failed attempts without any new byte before giving up
RETRY_WAIT = 1.0  # seconds before the first retry, doubled each time, capped by MAX_RETRY_WAIT
MAX_RETRY_WAIT = 30.0
#: A stream closed without error with at most this many bytes unread is read to the end and verified (a tar reader
#: stops at the end-of-archive blocks and leaves the record padding unread).
DRAIN_LIMIT = 4 << 20
HASH_BLOCK = 8 << 20


def _hf() -> None:
    """Import huggingface_hub and httpx2 on first use, not at module import: every `dalle3-etl` command
    loads this module to register its commands, and these imports cost ~0.1 s and ~15 MB there."""
    global httpx2, HfApi, constants, hf_hub_download, hf_hub_url, EntryNotFoundError, HfHubHTTPError
    global HfUriError, RepositoryNotFoundError, RevisionNotFoundError, RepoFile, RepoFolder
    global build_hf_headers, hf_raise_for_status, http_stream_backoff, parse_hf_uri
    if "parse_hf_uri" in globals():  # bound last: a thread never sees half of them
        return
    import httpx2
    from huggingface_hub import HfApi, constants, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HfUriError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.hf_api import RepoFile, RepoFolder
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff, parse_hf_uri


# -- errors ----------------------------------------------------------------------------------------

class HubError(Exception):
    """Base class of this module's errors."""


class HubNotFoundError(HubError, SourceError):
    """The repo, revision, path or shard asked for does not exist (or is not visible with this token)."""


class HubUnavailableError(HubError, SourceError):
    """The Hub could not be reached or answered with an error while resolving inputs."""


class HubIntegrityError(HubError):
    """Bytes read from the Hub do not match the size or sha256 of the Hub's LFS metadata."""


class HubTransferError(HubError, OSError):
    """Reading a file from the Hub failed for good (the connection kept dropping, or an HTTP error)."""


class ShardSelectionError(HubError, ValueError):
    """A ``--shards`` selection such as ``0-9,12`` could not be parsed."""


# -- endpoint and keep dir -------------------------------------------------------------------------

_KEEP_DIR: Path | None = None


def set_keep_dir(path: Path | str | None) -> None:
    """Default keep dir for sources resolved from now on (``--keep-tars DIR``); ``None`` to stop keeping."""
    global _KEEP_DIR
    _KEEP_DIR = Path(path).expanduser().resolve() if path is not None else None


def with_keep_dir(sources: list[ShardSource], keep_dir: Path | str | None) -> list[ShardSource]:
    """The same sources, Hub ones set to keep their bytes in ``keep_dir`` (others unchanged)."""
    kd = str(Path(keep_dir).expanduser().resolve()) if keep_dir is not None else None
    return [replace(s, keep_dir=kd) if isinstance(s, HubShardSource) else s for s in sources]


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub endpoint to use: explicit, else ``HF_ENDPOINT`` now, else the client's constant."""
    _hf()
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


# -- sources ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HubShardSource(ShardSource):
    """A shard stored in a Hub repo, pinned to a commit. ``open()`` streams it over HTTP, verified."""

    repo_id: str = ""
    repo_type: str = "dataset"
    commit: str = ""
    path_in_repo: str = ""
    sha256: str | None = None  # LFS oid; None for a file stored in git itself
    blob_id: str | None = field(default=None, compare=False)  # git oid (checked for non-LFS files)
    endpoint: str | None = field(default=None, compare=False)
    keep_dir: str | None = field(default=None, compare=False)

    def open(self) -> "HubStream":
        return open_verified_stream(self, keep_dir=self.keep_dir)


def _uri(repo_type: str, repo_id: str, commit: str | None, path: str) -> str:
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    at = f"@{commit}" if commit else ""
    return f"hf://{prefix}{repo_id}{at}/{path}"


def _source(entry: "RepoFile", *, repo_id: str, repo_type: str, commit: str, endpoint: str,
            keep_dir: Path | None) -> HubShardSource:
    _hf()
    size = entry.lfs.size if entry.lfs is not None else entry.size
    sha = entry.lfs.sha256 if entry.lfs is not None else None
    uri = _uri(repo_type, repo_id, commit, entry.path)
    # The fingerprint names the file without the commit: the repo gets new commits when shards are added, and a
    # shard whose bytes did not change (same sha256) must not be converted again because of that.
    return HubShardSource(
        shard_id=shard_id_for(entry.path), uri=uri, size=int(size),
        fingerprint={"uri": _uri(repo_type, repo_id, None, entry.path), "size": int(size), "sha256": sha},
        repo_id=repo_id, repo_type=repo_type, commit=commit, path_in_repo=entry.path, sha256=sha,
        blob_id=entry.blob_id, endpoint=endpoint, keep_dir=str(keep_dir) if keep_dir is not None else None,
    )


def _hub_call(what: str, fn, *args, **kwargs):
    """Run a client call, turning its errors into this module's (with the repo/revision in the message)."""
    _hf()
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
        raise HubUnavailableError(f"{what}: the Hub could not be reached or failed: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resolve_commit(api: "HfApi", repo_id: str, repo_type: str, revision: str | None) -> str:
    _hf()
    what = f"{repo_id}@{revision or constants.DEFAULT_REVISION}"
    info = _hub_call(what, api.repo_info, repo_id, repo_type=repo_type, revision=revision)
    if not info.sha:
        raise HubUnavailableError(f"{what}: the Hub did not say which commit this revision is")
    return info.sha


def _glob_regex(pattern: str) -> re.Pattern:
    """Glob over repo paths: ``*``/``?``/``[...]`` stay inside one path segment, ``**`` crosses segments."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _list_files(api: "HfApi", what: str, repo_id: str, repo_type: str, commit: str, base: str,
                recursive: bool) -> "list[RepoFile]":
    _hf()
    entries = _hub_call(what, lambda: list(api.list_repo_tree(
        repo_id, base or None, recursive=recursive, revision=commit, repo_type=repo_type)))
    return [e for e in entries if isinstance(e, RepoFile)]


MAX_BRACE_EXPANSION = 100_000


def _expand_braces(text: str) -> list[str]:
    """Shell-style ``{a,b}`` and ``{00..09}`` (zero-padded like bash), nested allowed; for quoted arguments."""
    m = None
    for cand in re.finditer(r"\{([^{}]*)\}", text):  # innermost first
        body = cand[1]
        if re.fullmatch(r"-?\d+\.\.-?\d+", body) or "," in body:
            m = cand
            break
    if m is None:
        return [text]
    body = m[1]
    r = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if r:
        lo, hi = int(r[1]), int(r[2])
        if abs(hi - lo) >= MAX_BRACE_EXPANSION:
            raise SourceError(f"{{{body}}}: brace range too large")
        padded = any(len(x.lstrip("-")) > 1 and x.lstrip("-").startswith("0") for x in (r[1], r[2]))
        width = max(len(r[1]), len(r[2])) if padded else 0
        step = 1 if hi >= lo else -1
        items = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        items = body.split(",")
    out: list[str] = []
    for item in items:
        out.extend(_expand_braces(text[: m.start()] + item + text[m.end() :]))
        if len(out) > MAX_BRACE_EXPANSION:
            raise SourceError(f"{text}: brace expansion too large")
    return list(dict.fromkeys(out))


def _match_files(api: "HfApi", what: str, repo_id: str, repo_type: str, commit: str, path: str) -> "list[RepoFile]":
    """Repo files named by ``path``: a file, a folder (its shards, recursively), a glob, with ``{...}`` braces."""
    _hf()
    alternatives = list(dict.fromkeys(_expand_braces(path)))
    exact = [a for a in alternatives if not _has_magic(a)]
    globs = [a for a in alternatives if _has_magic(a)]
    found: dict[str, RepoFile] = {}
    if exact:
        infos = []
        for i in range(0, len(exact), 100):
            infos += _hub_call(what, api.get_paths_info, repo_id, exact[i : i + 100], revision=commit,
                               repo_type=repo_type)
        by_path = {info.path: info for info in infos}
        missing = [p for p in exact if p not in by_path]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise HubNotFoundError(f"{what}: no such file or folder in the repo: {', '.join(missing[:5])}{more}")
        for p in exact:
            info = by_path[p]
            if isinstance(info, RepoFolder):
                files = [f for f in _list_files(api, what, repo_id, repo_type, commit, info.path, True)
                         if f.path.endswith(SHARD_SUFFIXES)]
                if not files:
                    raise HubNotFoundError(f"{what}: folder {p} contains no .tar shards")
                found.update((f.path, f) for f in files)
            else:
                found[p] = info
    listings: dict[tuple[str, bool], list[RepoFile]] = {}
    matched_any = False
    for g in globs:
        parts = g.split("/")
        k = next(i for i, part in enumerate(parts) if _has_magic(part))
        key = ("/".join(parts[:k]), len(parts) - k > 1 or "**" in g)
        if key not in listings:
            try:
                listings[key] = _list_files(api, what, repo_id, repo_type, commit, key[0], key[1])
            except HubNotFoundError:
                listings[key] = []
        rx = _glob_regex(g)
        for f in listings[key]:
            if rx.match(f.path) and f.path.endswith(SHARD_SUFFIXES):
                found[f.path] = f
                matched_any = True
    if globs and not matched_any:
        raise HubNotFoundError(f"{what}: pattern matches no .tar shards in the repo")
    return list(found.values())


_DEFAULT: Any = object()


def resolve_hub_input(arg: str, *, keep_dir: Path | str | None = _DEFAULT, endpoint: str | None = None,
                      token: str | bool | None = None) -> list[HubShardSource]:
    """``hf://datasets/<owner>/<name>[@<rev>]/<path>`` -> shard sources pinned to the revision's commit.

    ``path`` may be a file (any name), a folder (its ``.tar`` shards, recursively) or a glob (``data/*.tar``,
    ``data/data-00000[0-9].tar``, ``**`` across folders; only ``.tar`` shards are kept), with shell-style braces
    for quoted arguments (``data/data-0000{00..09}.tar``; every expanded name without a wildcard must exist).
    Raises a `SourceError` subclass naming the argument when nothing matches, the repo/revision does not exist,
    or the Hub cannot be reached, and a `SourceError` naming the file when its name cannot be a shard id
    (`sources.shard_id_problem`: ``data/..tar``...). ``keep_dir`` defaults to the one set with `set_keep_dir`.
    """
    _hf()
    return resolve_hub_inputs([arg], keep_dir=keep_dir, endpoint=endpoint, token=token)


def resolve_hub_inputs(args: list[str], *, keep_dir: Path | str | None = _DEFAULT, endpoint: str | None = None,
                       token: str | bool | None = None) -> list[HubShardSource]:
    """`resolve_hub_input` for several arguments, resolving each repo revision to its commit once (all arguments
    naming the same ``repo@rev`` are pinned to the same commit, even if the branch moves meanwhile)."""
    _hf()
    kd = _KEEP_DIR if keep_dir is _DEFAULT else (Path(keep_dir).expanduser().resolve() if keep_dir is not None else None)
    ep = hub_endpoint(endpoint)
    api = HfApi(endpoint=ep, token=token)
    commits: dict[tuple[str, str, str | None], str] = {}
    by_uri: dict[str, HubShardSource] = {}
    for arg in args:
        try:
            parsed = parse_hf_uri(arg)
        except (HfUriError, ValueError) as exc:
            raise SourceError(f"{arg}: not a valid hf:// URI ({exc})") from exc
        if parsed.is_bucket:
            raise SourceError(f"{arg}: buckets are not supported; use hf://datasets/<owner>/<name>/<path>")
        path = parsed.path_in_repo.strip("/")
        if not path:
            raise SourceError(f"{arg}: give a path in the repo, e.g. {arg.rstrip('/')}/data/*.tar")
        key = (parsed.type, parsed.id, parsed.revision)
        if key not in commits:
            commits[key] = _resolve_commit(api, parsed.id, parsed.type, parsed.revision)
        commit = commits[key]
        files = _match_files(api, f"{arg} (commit {commit[:12]})", parsed.id, parsed.type, commit, path)
        for f in files:
            src = _source(f, repo_id=parsed.id, repo_type=parsed.type, commit=commit, endpoint=ep, keep_dir=kd)
            by_uri[src.uri] = src
    return sorted(by_uri.values(), key=lambda s: natural_key(s.uri))


# -- verified streaming ----------------------------------------------------------------------------

def _new_hasher(src: HubShardSource):
    """(hasher, expected hex digest, label): sha256 for LFS files, git's blob sha1 for files stored in git."""
    if src.sha256:
        return hashlib.sha256(), src.sha256.lower(), "sha256"
    if src.blob_id:
        h = hashlib.sha1()
        h.update(b"blob %d\0" % src.size)
        return h, src.blob_id.lower(), "git blob sha1"
    return hashlib.sha256(), None, "sha256"


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _transient(exc: BaseException) -> bool:
    _hf()
    if isinstance(exc, httpx2.TransportError):
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in (408, 429) or exc.response.status_code >= 500
    return False


class HubStream(io.RawIOBase):
    """Non-seekable, verified, resuming binary stream of one Hub file; see `open_verified_stream`."""

    def __init__(self, source: HubShardSource, *, keep_dir: Path | str | None = None,
                 token: str | bool | None = None, chunk_size: int | None = None, max_retries: int | None = None,
                 drain_limit: int | None = None):
        super().__init__()
        self.source = source
        self.name = source.uri
        self.mode = "rb"
        self.digest: str | None = None  # hex digest once the whole file was read and matched
        self._path = source.path_in_repo
        self._size = source.size
        self._hasher, self._expected, self._algo = _new_hasher(source)
        self._token = token
        self._chunk_size = chunk_size or CHUNK_SIZE
        self._max_retries = MAX_RETRIES if max_retries is None else max_retries
        self._drain_limit = DRAIN_LIMIT if drain_limit is None else drain_limit
        self._received = 0  # body bytes received, hashed (and kept) so far
        self._delivered = 0  # bytes handed to the reader
        self._buf = b""
        self._bufpos = 0
        self._skip = 0  # bytes to drop from the next body (a server that ignored our Range)
        self._stack: ExitStack | None = None
        self._iter: Iterator[bytes] | None = None
        self._done = False
        self._broken = False
        self._local: Path | None = None  # verified kept copy, read instead of the network
        self._keep_final: Path | None = None
        self._keep_part: Path | None = None
        self._keep_fh = None
        if keep_dir is not None:
            final = Path(keep_dir) / PurePosixPath(self._path).name
            if final.is_file() and final.stat().st_size == self._size:
                self._local = final
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                self._keep_final = final
                self._keep_part = final.with_name(final.name + ".part")
                self._keep_fh = open(self._keep_part, "wb")

    # -- io.RawIOBase ------------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._delivered

    def readinto(self, b) -> int:
        self._checkClosed()
        if not self._fill():
            return 0
        view = memoryview(b).cast("B")
        n = min(len(view), len(self._buf) - self._bufpos)
        view[:n] = self._buf[self._bufpos : self._bufpos + n]
        self._bufpos += n
        self._delivered += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        if size is None or size < 0:
            return self.readall()
        if size == 0 or not self._fill():
            return b""
        end = min(self._bufpos + size, len(self._buf))
        data = self._buf[self._bufpos : end]
        self._delivered += end - self._bufpos
        self._bufpos = end
        return data

    def readall(self) -> bytes:
        self._checkClosed()
        parts = []
        while self._fill():
            parts.append(self._buf[self._bufpos :])
            self._delivered += len(self._buf) - self._bufpos
            self._bufpos = len(self._buf)
        return b"".join(parts)

    # -- completion ------------------------------------------------------------------------------
    @property
    def verified(self) -> bool:
        return self._done

    def finish(self) -> str:
        """Read (and discard) whatever is left, check size and hash; returns the hex digest.

        Raises `HubIntegrityError` on a mismatch, `HubTransferError` when the rest cannot be read.
        """
        self._checkClosed()
        while self._fill():
            self._delivered += len(self._buf) - self._bufpos
            self._bufpos = len(self._buf)
        assert self.digest is not None
        return self.digest

    def close(self) -> None:
        """Close; when at most ``drain_limit`` bytes were left unread (and no error happened), read them and verify
        first, so a tar reader that stops at the end-of-archive blocks still gets its file checked (and kept)."""
        if self.closed:
            return
        try:
            if not self._broken and not self._done and self._size - self._delivered <= self._drain_limit:
                self.finish()
        finally:
            self._release()
            super().close()

    def abandon(self) -> None:
        """Close without reading further or verifying (what leaving a ``with`` block on an exception does)."""
        self._broken = True
        self.close()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()
        else:
            self.close()

    def __del__(self) -> None:
        try:
            self.abandon()
        except Exception:
            pass

    # -- internals -------------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        self._broken = True
        self._release()
        raise exc

    def _release(self) -> None:
        self._disconnect()
        if self._keep_fh is not None:
            self._keep_fh.close()
            self._keep_fh = None
            if not self._done and self._keep_part is not None:
                Root(self._keep_part.parent).unlink(self._keep_part)

    def _disconnect(self) -> None:
        self._iter = None
        stack, self._stack = self._stack, None
        if stack is not None:
            try:
                stack.close()
            except Exception:  # closing a broken connection may complain again; it is gone either way
                pass

    def _fill(self) -> bool:
        """Make unread bytes available in the buffer; False at the end of the (verified) file."""
        while self._bufpos >= len(self._buf):
            if self._done:
                return False
            if self._broken:
                raise HubTransferError(f"{self._path}: stream is unusable after an earlier error")
            chunk = self._next_chunk() if self._received < self._size else b""
            if chunk:
                self._hasher.update(chunk)
                if self._keep_fh is not None:
                    self._keep_fh.write(chunk)
                self._received += len(chunk)
            self._buf, self._bufpos = chunk, 0
            if self._received >= self._size:
                self._complete()
        return True

    def _complete(self) -> None:
        self._disconnect()
        actual = self._hasher.hexdigest()
        if self._expected is not None and actual != self._expected:
            where = f"kept copy {self._local}" if self._local is not None else self.name
            moved = ""
            if self._local is not None:
                bad = self._local.with_name(self._local.name + ".corrupt")
                Root(self._local.parent).replace(self._local, bad)
                moved = f"; moved it to {bad}, it will be downloaded again next time"
            self._fail(HubIntegrityError(
                f"{self._path}: {self._algo} mismatch reading {where}: expected {self._expected}, got {actual} "
                f"({self._received} bytes){moved}"))
        self.digest = actual
        self._done = True
        if self._keep_fh is not None:
            self._keep_fh.flush()
            os.fsync(self._keep_fh.fileno())
            self._keep_fh.close()
            self._keep_fh = None
            Root(self._keep_part.parent).replace(self._keep_part, self._keep_final)

    def _next_chunk(self) -> bytes:
        """The next non-empty piece of the body, reconnecting with a Range request when the connection drops."""
        failures = 0
        while True:
            error: BaseException | None = None
            try:
                if self._iter is None:
                    self._connect()
                chunk = next(self._iter, None)  # type: ignore[arg-type]
            except HubError:
                raise
            except Exception as exc:
                if not _transient(exc):
                    self._fail(HubTransferError(f"{self._path}: reading {self.name} failed: {_one_line(exc)}"))
                error = exc
            else:
                if chunk is not None:
                    if self._skip:
                        drop = min(self._skip, len(chunk))
                        self._skip -= drop
                        chunk = chunk[drop:]
                    if not chunk:
                        continue
                    if self._received + len(chunk) > self._size:
                        self._fail(HubIntegrityError(
                            f"{self._path}: the server sent more than the {self._size} bytes the Hub lists for it"))
                    return chunk
                if self._local is not None:
                    self._fail(HubIntegrityError(f"{self._path}: kept copy {self._local} is shorter than expected"))
            # the connection dropped (error) or the body ended before the file did (error is None)
            self._disconnect()
            failures += 1
            why = _one_line(error) if error is not None else "body ended early"
            if failures > self._max_retries:
                self._fail(HubTransferError(
                    f"{self._path}: gave up after {failures} attempts at byte {self._received} of {self._size} "
                    f"({why})"))
            wait = min(RETRY_WAIT * 2 ** (failures - 1), MAX_RETRY_WAIT)
            logger.warning("%s: %s at byte %d of %d; resuming in %.1fs (attempt %d/%d)", self._path, why,
                           self._received, self._size, wait, failures, self._max_retries)
            time.sleep(wait)

    def _connect(self) -> None:
        _hf()
        stack = ExitStack()
        if self._local is not None:
            fh = stack.enter_context(open(self._local, "rb"))
            fh.seek(self._received)
            self._stack = stack
            self._iter = iter(lambda: fh.read(self._chunk_size), b"")
            return
        src = self.source
        url = hf_hub_url(src.repo_id, src.path_in_repo, repo_type=src.repo_type, revision=src.commit,
                         endpoint=hub_endpoint(src.endpoint))
        headers = build_hf_headers(token=self._token)
        headers["Accept-Encoding"] = "identity"
        if self._received:
            headers["Range"] = f"bytes={self._received}-"
        try:
            resp = stack.enter_context(http_stream_backoff(
                "GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT))
            hf_raise_for_status(resp)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        if resp.status_code == 206:
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if m is None or int(m[1]) != self._received:
                self._fail(HubTransferError(
                    f"{self._path}: asked for bytes {self._received}- but got Content-Range "
                    f"{resp.headers.get('Content-Range')!r}"))
            if m[3] != "*" and int(m[3]) != self._size:
                self._fail(HubIntegrityError(
                    f"{self._path}: the server has {m[3]} bytes, the Hub lists {self._size}"))
        elif resp.status_code == 200:
            self._skip = self._received  # Range ignored: the body starts over
            length = resp.headers.get("Content-Length")
            if length is not None and resp.headers.get("Content-Encoding", "identity") == "identity" \
                    and int(length) != self._size:
                self._fail(HubIntegrityError(
                    f"{self._path}: the server sends {length} bytes, the Hub lists {self._size}"))
        else:
            self._fail(HubTransferError(f"{self._path}: unexpected HTTP {resp.status_code} from {url}"))
        # Chunks as they arrive (a fixed chunk size would lose the partial chunk when the connection drops), cut
        # to at most chunk_size so the reader sees steady progress.
        self._iter = _pieces(resp.iter_bytes(), self._chunk_size)


def _pieces(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    for chunk in chunks:
        if len(chunk) <= size:
            yield chunk
        else:
            for i in range(0, len(chunk), size):
                yield chunk[i : i + size]


def open_verified_stream(source: HubShardSource, *, keep_dir: Path | str | None = None,
                         token: str | bool | None = None, **kwargs: Any) -> HubStream:
    """Open ``source`` for sequential reading over HTTP (see `HubStream`).

    Reading to the end raises `HubIntegrityError` (naming the file, expected and actual sha256) if the bytes do not
    match the Hub's LFS metadata; `HubStream.finish` reads what is left and verifies; closing the stream without
    error verifies too when at most `DRAIN_LIMIT` bytes were left. With ``keep_dir`` the file is written to
    ``keep_dir/<name>.part`` while read and renamed to ``keep_dir/<name>`` once complete and verified; if that
    verified copy is already there (right size), it is read instead of the network.
    """
    return HubStream(source, keep_dir=keep_dir, token=token, **kwargs)


# -- shard selection -------------------------------------------------------------------------------

def parse_shard_selection(text: str) -> list[int]:
    """``"0-9,12"`` -> ``[0, 1, ..., 9, 12]`` (sorted, each once). Raises `ShardSelectionError` saying what is wrong."""
    if text is None or not text.strip():
        raise ShardSelectionError("empty shard selection; expected e.g. 0-9,12")
    out: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ShardSelectionError(f"{text!r}: empty item between commas; expected e.g. 0-9,12")
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", item)
        if m is None:
            raise ShardSelectionError(
                f"{text!r}: {item!r} is not a shard number or range (use non-negative numbers like 7 or 0-9)")
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo:
            raise ShardSelectionError(f"{text!r}: range {item!r} goes backwards (write {hi}-{lo})")
        if hi > MAX_SHARD_INDEX:
            raise ShardSelectionError(f"{text!r}: shard {hi} is out of range (0-{MAX_SHARD_INDEX})")
        out.update(range(lo, hi + 1))
    return sorted(out)


def _ranges(nums: list[int]) -> str:
    """[0,1,2,5] -> '0-2,5'"""
    out, i = [], 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


# -- download --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DownloadResult:
    """One file of a `download`. ``ok`` means: on disk at ``path`` with the Hub's size and sha256."""

    filename: str  # path in the repo, e.g. "data/data-000000.tar"
    path: Path | None  # the verified local file (None when not ok)
    expected_size: int
    expected_sha256: str | None
    ok: bool
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
    cached: bool = False  # verified by an earlier run and unchanged since: not hashed again
    moved_to: Path | None = None  # where a mismatching file was moved


class _Tracker:
    """Rich progress for a download: one overall bar plus one bar per active file (download, then hashing)."""

    def __init__(self, enabled: bool, files: "list[RepoFile]", console=None):
        self.enabled = enabled
        self._lock = threading.Lock()
        self._sizes = {f.path: _file_size(f) for f in files}
        self._counted = {f.path: 0 for f in files}
        self._tasks: dict[str, Any] = {}
        self._n = len(files)
        self._verified = 0
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.progress = Progress(  # markup=False: descriptions hold file names from the Hub, printed as they are
                TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=console or Console(stderr=True),
            )
            self._overall = self.progress.add_task(self._overall_text(), total=sum(self._sizes.values()) or None)

    def _overall_text(self) -> str:
        return f"all files ({self._verified}/{self._n} verified)"

    def __enter__(self) -> "_Tracker":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _task(self, name: str, what: str):
        if self.progress is None:
            return None
        label = f"{what} {plain(PurePosixPath(name).name)}"
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self.progress.add_task(label, total=self._sizes.get(name) or None)
        else:
            self.progress.update(task, description=label)
        return task

    def bar_class(self, name: str) -> type:
        tracker = self

        class Bar(_ClientBar):
            def _advance(self, n: int) -> None:
                tracker.downloaded(name, n)

        return Bar

    def downloaded(self, name: str, n: int) -> None:
        with self._lock:
            self._counted[name] += n
            if self.progress is not None:
                self.progress.update(self._task(name, "downloading"), advance=n)
                self.progress.update(self._overall, advance=n)

    def fetched(self, name: str) -> None:
        """The download call returned: count bytes the client did not report (file already there)."""
        with self._lock:
            rest = self._sizes[name] - self._counted[name]
            self._counted[name] = self._sizes[name]
            if self.progress is not None and rest:
                self.progress.update(self._overall, advance=rest)

    def hashing(self, name: str) -> None:
        with self._lock:
            if self.progress is not None:
                self.progress.reset(self._task(name, "verifying"), total=self._sizes.get(name) or None)

    def hashed(self, name: str, n: int) -> None:
        if self.progress is not None:
            with self._lock:
                self.progress.update(self._tasks[name], advance=n)

    def finished(self, name: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._verified += 1
            if self.progress is not None:
                task = self._tasks.pop(name, None)
                if task is not None:
                    self.progress.remove_task(task)
                self.progress.update(self._overall, description=self._overall_text())


class _ClientBar:
    """What the huggingface_hub client needs from a ``tqdm_class``; forwards byte counts to a `_Tracker`.

    Defines ``update_transfer`` so that Xet downloads report into this one bar instead of creating a second one.
    """

    def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any):
        self.n = initial
        self.total = total
        self.format_dict = {"rate": None}

    def _advance(self, n: int) -> None:  # overridden by `_Tracker.bar_class`
        pass

    def update(self, n: int | float | None = 1) -> None:
        if n:
            self.n += int(n)
            self._advance(int(n))

    def update_transfer(self, n: int | float | None = 1) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    set_transfer_postfix_str = set_postfix_str
    set_description = set_postfix_str

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_ClientBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _file_size(f: "RepoFile") -> int:
    return int(f.lfs.size if f.lfs is not None else f.size)


def _marker(local_dir: Path, name: str) -> Path:
    return local_dir / ".cache" / "dalle3-etl" / "verified" / (name + ".json")


def _verify_file(local_dir: Path, entry: "RepoFile", path: Path, tracker: _Tracker, reverify: bool) -> DownloadResult:
    name = entry.path
    exp_size = _file_size(entry)
    exp_sha = entry.lfs.sha256.lower() if entry.lfs is not None else None
    base = dict(filename=name, expected_size=exp_size, expected_sha256=exp_sha)
    marker = _marker(local_dir, name)
    st = path.stat()

    def bad(message: str, size: int, sha: str | None) -> DownloadResult:
        moved = path.with_name(path.name + ".corrupt")
        root = Root(local_dir)
        root.replace(path, moved)
        root.unlink(marker)
        return DownloadResult(**base, path=None, ok=False, size=size, sha256=sha, moved_to=moved,
                              error=f"{name}: {message}; moved it to {moved}")

    if st.st_size != exp_size:
        return bad(f"size mismatch: expected {exp_size} bytes, got {st.st_size} bytes", st.st_size, None)
    if not reverify and exp_sha is not None:
        try:
            seen = json.loads(marker.read_text())
            if seen == {"sha256": exp_sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
                return DownloadResult(**base, path=path, ok=True, size=st.st_size, sha256=exp_sha, cached=True)
        except (OSError, ValueError):
            pass
    if exp_sha is not None:
        h, expected, algo = hashlib.sha256(), exp_sha, "sha256"
    else:
        h, expected, algo = hashlib.sha1(b"blob %d\0" % st.st_size), entry.blob_id.lower(), "git blob sha1"
    tracker.hashing(name)
    with open(path, "rb", buffering=0) as fh:
        block = bytearray(HASH_BLOCK)
        view = memoryview(block)
        while True:
            k = fh.readinto(block)
            if not k:
                break
            h.update(view[:k])
            tracker.hashed(name, k)
    actual = h.hexdigest()
    if actual != expected:
        return bad(f"{algo} mismatch: expected {expected}, got {actual}", st.st_size, actual)
    if exp_sha is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"sha256": actual, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    return DownloadResult(**base, path=path, ok=True, size=st.st_size, sha256=actual if exp_sha else None)


def download(repo: str, local_dir: Path, *, revision: str | None = None, shards: str | None = None,
             workers: int = 4, progress: bool = True, token: str | None = None, repo_type: str = "dataset",
             reverify: bool = False, endpoint: str | None = None, console=None) -> list[DownloadResult]:
    """Download shards ``data/data-NNNNNN.tar`` of ``repo`` into ``local_dir/data/``, each checked against the Hub.

    ``shards``: a selection like ``"0-9,12"`` (`parse_shard_selection`); ``None`` = every ``data/*.tar`` of the
    revision. Files are fetched by ``hf_hub_download(local_dir=...)`` (``workers`` at a time; a file already there
    from an earlier run at the same commit is not fetched again) and hashed in a separate pool as soon as each one
    lands. A file whose size or sha256 differs from the LFS metadata is renamed ``<name>.corrupt`` and its result
    has ``ok=False`` and an ``error`` naming it with the expected and actual values. A file verified by an earlier
    run and unchanged since (same size and mtime) is not hashed again unless ``reverify``.

    Raises `ShardSelectionError` for a bad selection, `HubNotFoundError` when the repo, revision or a selected
    shard does not exist (nothing is downloaded then), `HubUnavailableError` when the Hub cannot be reached.
    """
    _hf()
    if workers < 1:
        raise ValueError("workers must be at least 1")
    indices = parse_shard_selection(shards) if shards is not None else None
    local_dir = Path(local_dir).expanduser().resolve()
    ep = hub_endpoint(endpoint)
    api = HfApi(endpoint=ep, token=token)
    commit = _resolve_commit(api, repo, repo_type, revision)
    what = f"{repo}@{revision or constants.DEFAULT_REVISION} (commit {commit[:12]})"
    try:
        listing = {f.path: f for f in _list_files(api, what, repo, repo_type, commit, SHARD_DIR, False)}
    except HubNotFoundError:
        listing = {}
    if indices is None:
        wanted = sorted((p for p in listing if fnmatch.fnmatchcase(p, f"{SHARD_DIR}/*.tar")), key=natural_key)
        if not wanted:
            raise HubNotFoundError(f"{what}: no {SHARD_DIR}/*.tar shards in the repo")
    else:
        wanted = [SHARD_PATTERN % i for i in indices]
        missing = [i for i, p in zip(indices, wanted) if p not in listing]
        if missing:
            have = sorted(int(m[1]) for p in listing if (m := re.fullmatch(r"data/data-(\d{6})\.tar", p)))
            raise HubNotFoundError(
                f"{what}: no shard(s) {_ranges(missing)} in the repo (it has {_ranges(have) or 'none'})")
    entries = [listing[p] for p in wanted]
    local_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, DownloadResult] = {}
    tracker = _Tracker(progress, entries, console)

    def fetch(entry: "RepoFile") -> Path:
        path = hf_hub_download(
            repo, entry.path, repo_type=repo_type, revision=commit, local_dir=local_dir, endpoint=ep, token=token,
            tqdm_class=tracker.bar_class(entry.path),
        )
        tracker.fetched(entry.path)
        return Path(path)

    def verify(entry: "RepoFile", path: Path) -> DownloadResult:
        try:
            result = _verify_file(local_dir, entry, path, tracker, reverify)
        except OSError as exc:
            result = DownloadResult(entry.path, None, _file_size(entry), entry.lfs.sha256 if entry.lfs else None,
                                    ok=False, error=f"{entry.path}: could not check {path}: {_one_line(exc)}")
        tracker.finished(entry.path, result.ok)
        return result

    with tracker, ThreadPoolExecutor(workers, thread_name_prefix="hub-dl") as fetchers, \
            ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1)), thread_name_prefix="hub-sha") as hashers:
        pending: dict[Future, RepoFile] = {fetchers.submit(fetch, e): e for e in entries}
        checks: list[Future] = []
        try:
            for fut in as_completed(pending):
                entry = pending[fut]
                try:
                    path = fut.result()
                except Exception as exc:
                    tracker.finished(entry.path, False)
                    results[entry.path] = DownloadResult(
                        entry.path, None, _file_size(entry), entry.lfs.sha256 if entry.lfs else None, ok=False,
                        error=f"{entry.path}: download failed: {_one_line(exc)}")
                else:
                    checks.append(hashers.submit(verify, entry, path))
            for fut in checks:
                r = fut.result()
                results[r.filename] = r
        except BaseException:
            fetchers.shutdown(wait=False, cancel_futures=True)
            hashers.shutdown(wait=False, cancel_futures=True)
            raise
    return [results[p] for p in wanted]


# -- CLI -------------------------------------------------------------------------------------------

def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def _check_shards(value: Optional[str]) -> Optional[str]:
    if value is not None:
        try:
            parse_shard_selection(value)
        except ShardSelectionError as exc:
            raise typer.BadParameter(str(exc)) from exc
    return value


def add_cli(app: typer.Typer) -> None:
    """Register ``download`` on the project's typer app."""

    @app.command("download")
    def download_command(
        local_dir: Path = typer.Option(..., "--local-dir", help="Folder to download into (shards land in DIR/data/)."),
        repo: str = typer.Option(DEFAULT_REPO, "--repo", help="Dataset repo on the Hub."),
        revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit (default: main)."),
        shards: Optional[str] = typer.Option(None, "--shards", callback=_check_shards,
                                             help="Shard numbers, e.g. 0-9,12 (default: all data/*.tar)."),
        workers: int = typer.Option(4, "--workers", min=1, help="Files downloaded at the same time."),
        reverify: bool = typer.Option(False, "--reverify", help="Hash files again even if verified by an earlier run."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars; print only failures."),
    ) -> None:
        """Download shards from the Hub and check each one's size and sha256 against the Hub's LFS metadata.

        A file that does not match is renamed NAME.corrupt and reported.
        Exit code: 0 all verified, 1 any file failed or did not match, 2 usage error (bad --shards, unknown repo,
        revision or shard).
        """
        try:
            results = download(repo, local_dir, revision=revision, shards=shards, workers=workers,
                               progress=not quiet, reverify=reverify)
        except (ShardSelectionError, HubNotFoundError) as exc:
            typer.echo(f"error: {plain(exc)}", err=True)
            raise typer.Exit(2)
        except HubUnavailableError as exc:
            typer.echo(f"error: {plain(exc)}", err=True)
            raise typer.Exit(1)
        failed = [r for r in results if not r.ok]
        for r in results:
            if r.ok and not quiet:
                note = " (verified earlier)" if r.cached else ""
                digest = f"sha256 {r.sha256}" if r.sha256 else "git blob ok"
                typer.echo(f"ok      {plain(r.filename)}  {_human(r.size or 0)}  {digest}{note}")
            elif not r.ok:
                typer.echo(f"FAILED  {plain(r.error)}", err=True)
        where = Path(local_dir).expanduser().resolve() / SHARD_DIR
        summary = plain(f"{len(results) - len(failed)} of {len(results)} file(s) verified in {where}")
        if failed:
            typer.echo(f"{summary}; {len(failed)} failed: {plain(', '.join(r.filename for r in failed))} "
                       "(run the same command again to retry them)", err=True)
            raise typer.Exit(1)
        if not quiet:
            typer.echo(summary)
