"""The library side of ``download``: fetch shards ``data/data-NNNNNN.tar`` of a Hub repo into a folder, each file
checked against the size and sha256 of the Hub's LFS metadata, and one `DownloadResult` per file.

The command (options, messages, exit codes) is `dalle3_etl.cli.download_cmd`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.hf_api import RepoFile

from dalle3_etl.sources.base import natural_key
from dalle3_etl.sources.hub.client import file_size, hub_endpoint, list_files, one_line, resolve_commit
from dalle3_etl.sources.hub.errors import HubNotFoundError
from dalle3_etl.sources.hub.keep import in_the_way, refuse_in_the_way
from dalle3_etl.sources.hub.progress import DownloadTracker
from dalle3_etl.sources.hub.selection import SHARD_DIR, SHARD_PATTERN, parse_shard_selection, ranges
from dalle3_etl.store.fsio import OwnershipError, Root

HASH_BLOCK = 8 << 20


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
    moved_to: Path | None = None  # where a mismatching file this run downloaded was moved


def download(
    repo: str,
    local_dir: Path,
    *,
    revision: str | None = None,
    shards: str | None = None,
    workers: int = 4,
    progress: bool = True,
    token: str | None = None,
    repo_type: str = "dataset",
    reverify: bool = False,
    endpoint: str | None = None,
    console=None,
) -> list[DownloadResult]:
    """Download shards ``data/data-NNNNNN.tar`` of ``repo`` into ``local_dir/data/``, each checked against the Hub.

    ``shards``: a selection like ``"0-9,12"`` (`parse_shard_selection`); ``None`` = every ``data/*.tar`` of the
    revision. Missing files are fetched by ``hf_hub_download(local_dir=...)`` (``workers`` at a time) and hashed in
    a separate pool as soon as each one lands; a file already there (of the Hub's size) is not fetched, only
    checked. A file whose size or sha256 differs from the LFS metadata has a result with ``ok=False`` and an
    ``error`` naming it with the expected and actual values: one this run downloaded is renamed ``<name>.corrupt``
    (``<name>.corrupt.1``... when that name is taken: nothing is replaced), one that was there before is left as it
    is. A file verified by an earlier run and unchanged since (same size and mtime) is not hashed again unless
    ``reverify``.

    Raises `ShardSelectionError` for a bad selection, `HubNotFoundError` when the repo, revision or a selected
    shard does not exist, `HubLocalFileError` when a shard's name in ``local_dir`` is taken by something that
    cannot be that shard (another size, a folder, a link to nothing; or a symlink in the client's download state)
    (nothing is downloaded then), `HubUnavailableError` when the Hub cannot be reached.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    indices = parse_shard_selection(shards) if shards is not None else None
    local_dir = Path(local_dir).expanduser().resolve()
    ep = hub_endpoint(endpoint)
    api = HfApi(endpoint=ep, token=token)
    commit = resolve_commit(api, repo, repo_type, revision)
    what = f"{repo}@{revision or constants.DEFAULT_REVISION} (commit {commit[:12]})"
    entries = _select_files(api, what, repo, repo_type, commit, indices)
    _check_local_files(local_dir, entries)
    local_dir.mkdir(parents=True, exist_ok=True)
    job = _Job(repo, repo_type, commit, local_dir, ep, token, reverify, DownloadTracker(progress, entries, console))
    results = _fetch_and_verify(job, entries, workers)
    return [results[entry.path] for entry in entries]


def _select_files(
    api: HfApi, what: str, repo: str, repo_type: str, commit: str, indices: list[int] | None
) -> list[RepoFile]:
    """The shard files to download, in order: those ``indices`` name, else every ``data/*.tar`` of the commit.
    Raises `HubNotFoundError` naming the missing shards (and those there are), or when there are none."""
    try:
        listing = {f.path: f for f in list_files(api, what, repo, repo_type, commit, SHARD_DIR, False)}
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
                f"{what}: no shard(s) {ranges(missing)} in the repo (it has {ranges(have) or 'none'})"
            )
    return [listing[p] for p in wanted]


#: The client's state in ``local_dir`` (``hf_hub_download``: .gitignore, metadata, locks, ``.incomplete`` files).
_CLIENT_STATE = (".cache", "huggingface", "download")
_THROUGH = "a symlink: the download client would write through it"


def _check_local_files(local_dir: Path, entries: list[RepoFile]) -> None:
    """Refuse (`HubLocalFileError`, before any download) a shard's name taken by something that cannot be that shard
    (`keep.in_the_way`: another size, a folder, a link to nothing), and a symlink in the client's state (it holds
    none of its own; the client appends to its ``.incomplete`` files and writes its metadata through links)."""
    problems = []
    for entry in entries:
        final = local_dir / entry.path
        why = in_the_way(final, file_size(entry))
        if why is not None:
            problems.append(f"{final} ({why})")
    chains = {(*_CLIENT_STATE, *e.path.split("/")[:-1]) for e in entries}
    folders = sorted({chain[:i] for chain in chains for i in range(1, len(chain) + 1)})
    for parts in folders:
        folder = local_dir.joinpath(*parts)
        if folder.is_symlink():
            problems.append(f"{folder} ({_THROUGH})")
        elif len(parts) > 1 and folder.is_dir():  # `.cache` itself may hold other programs' links
            try:
                with os.scandir(folder) as it:
                    problems.extend(f"{e.path} ({_THROUGH})" for e in it if e.is_symlink())
            except OSError as exc:
                problems.append(f"{folder} (it cannot be checked: {exc.strerror or exc})")
    refuse_in_the_way("download", list(dict.fromkeys(problems)), "move it away, or download into another folder")


@dataclass(frozen=True)
class _Job:
    """One download: where each file comes from (repo at a commit), where it goes, how it is checked and shown."""

    repo: str
    repo_type: str
    commit: str
    local_dir: Path
    endpoint: str
    token: str | None
    reverify: bool
    tracker: DownloadTracker

    def fetch(self, entry: RepoFile) -> Path:
        path = hf_hub_download(
            self.repo,
            entry.path,
            repo_type=self.repo_type,
            revision=self.commit,
            local_dir=self.local_dir,
            endpoint=self.endpoint,
            token=self.token,
            tqdm_class=self.tracker.bar_class(entry.path),
        )
        self.tracker.fetched(entry.path)
        return Path(path)

    def verify(self, entry: RepoFile, path: Path, fresh: bool) -> DownloadResult:
        try:
            result = _verify_file(self.local_dir, entry, path, self.tracker, self.reverify, fresh)
        except OSError as exc:
            result = _failed(entry, f"{entry.path}: could not check {path}: {one_line(exc)}")
        self.tracker.finished(entry.path, result.ok)
        return result


def _failed(entry: RepoFile, error: str) -> DownloadResult:
    return DownloadResult(
        entry.path, None, file_size(entry), entry.lfs.sha256 if entry.lfs else None, ok=False, error=error
    )


def _fetch_and_verify(job: _Job, entries: list[RepoFile], workers: int) -> dict[str, DownloadResult]:
    """Fetch ``workers`` files at a time; hash each one in a second pool as soon as it lands. By repo path. A file
    already there is not fetched (the client would replace one that is not the Hub's): only checked."""
    results: dict[str, DownloadResult] = {}
    there = {e.path for e in entries if os.path.lexists(job.local_dir / e.path)}
    with (
        job.tracker,
        ThreadPoolExecutor(workers, thread_name_prefix="hub-dl") as fetchers,
        ThreadPoolExecutor(max(1, min(workers, os.cpu_count() or 1)), thread_name_prefix="hub-sha") as hashers,
    ):
        checks: list[Future] = []
        for e in entries:
            if e.path in there:
                job.tracker.fetched(e.path)
                checks.append(hashers.submit(job.verify, e, job.local_dir / e.path, False))
        pending: dict[Future, RepoFile] = {fetchers.submit(job.fetch, e): e for e in entries if e.path not in there}
        try:
            for fut in as_completed(pending):
                entry = pending[fut]
                try:
                    path = fut.result()
                except Exception as exc:
                    job.tracker.finished(entry.path, False)
                    results[entry.path] = _failed(entry, f"{entry.path}: download failed: {one_line(exc)}")
                else:
                    checks.append(hashers.submit(job.verify, entry, path, True))
            for fut in checks:
                r = fut.result()
                results[r.filename] = r
        except BaseException:
            fetchers.shutdown(wait=False, cancel_futures=True)
            hashers.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _marker(local_dir: Path, name: str) -> Path:
    return local_dir / ".cache" / "dalle3-etl" / "verified" / (name + ".json")


def _verify_file(
    local_dir: Path, entry: RepoFile, path: Path, tracker: DownloadTracker, reverify: bool, fresh: bool
) -> DownloadResult:
    """Check ``path`` against the Hub's size and sha256. ``fresh``: this run downloaded it (a mismatch is set aside
    to ``<name>.corrupt``); else it was there before the run (a mismatch is left as it is)."""
    name = entry.path
    exp_size = file_size(entry)
    exp_sha = entry.lfs.sha256.lower() if entry.lfs is not None else None
    base = dict(filename=name, expected_size=exp_size, expected_sha256=exp_sha)
    marker = _marker(local_dir, name)
    st = path.stat()
    root = Root(local_dir)

    def bad(message: str, size: int, sha: str | None) -> DownloadResult:
        moved = None
        where = f"{path} was there before this run and is left as it is: move it away and run again to download it"
        try:
            root.unlink(marker)
            if fresh:  # this run's download: set aside, so it is never taken as a shard (nothing replaced)
                moved = root.set_aside(path, ".corrupt", same_as=st)
                where = f"moved it to {moved}"
        except OwnershipError as exc:
            where = f"it is left at {path} ({exc})"
        return DownloadResult(
            **base, path=None, ok=False, size=size, sha256=sha, moved_to=moved, error=f"{name}: {message}; {where}"
        )

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
    if exp_sha is not None:  # the marker only saves hashing next time: a marker that cannot be written is none
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            root.write_atomic(
                marker, json.dumps({"sha256": actual, "size": st.st_size, "mtime_ns": st.st_mtime_ns}).encode()
            )
        except (OSError, OwnershipError):
            pass
    return DownloadResult(**base, path=path, ok=True, size=st.st_size, sha256=actual if exp_sha else None)


__all__ = ["DownloadResult", "download", "HASH_BLOCK"]
