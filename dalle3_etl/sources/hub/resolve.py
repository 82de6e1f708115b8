"""``hf://`` arguments to shard sources: parse the URI, pin the revision to a commit, find the files it names (a
file, a folder's shards, a glob with ``**``, shell-style ``{a,b}`` and ``{00..09}`` braces) and make a
`HubShardSource` of each, with the size and sha256 of the Hub's LFS metadata.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfUriError
from huggingface_hub.hf_api import RepoFile, RepoFolder
from huggingface_hub.utils import parse_hf_uri

from dalle3_etl.sources.base import SHARD_SUFFIXES, ShardSource, SourceError, natural_key, shard_id_for
from dalle3_etl.sources.hub.client import hub_call, hub_endpoint, list_files, resolve_commit
from dalle3_etl.sources.hub.errors import HubNotFoundError
from dalle3_etl.sources.hub.keep import check_keep_dir
from dalle3_etl.sources.hub.stream import HubShardSource


def _uri(repo_type: str, repo_id: str, commit: str | None, path: str) -> str:
    prefix = "" if repo_type == "model" else f"{repo_type}s/"
    at = f"@{commit}" if commit else ""
    return f"hf://{prefix}{repo_id}{at}/{path}"


def _source(
    entry: RepoFile, *, repo_id: str, repo_type: str, commit: str, endpoint: str, keep_dir: Path | None
) -> HubShardSource:
    size = entry.lfs.size if entry.lfs is not None else entry.size
    sha = entry.lfs.sha256 if entry.lfs is not None else None
    uri = _uri(repo_type, repo_id, commit, entry.path)
    # The fingerprint names the file without the commit: the repo gets new commits when shards are added, and a
    # shard whose bytes did not change (same sha256) must not be converted again because of that.
    return HubShardSource(
        shard_id=shard_id_for(entry.path),
        uri=uri,
        size=int(size),
        fingerprint={"uri": _uri(repo_type, repo_id, None, entry.path), "size": int(size), "sha256": sha},
        repo_id=repo_id,
        repo_type=repo_type,
        commit=commit,
        path_in_repo=entry.path,
        sha256=sha,
        blob_id=entry.blob_id,
        endpoint=endpoint,
        keep_dir=str(keep_dir) if keep_dir is not None else None,
    )


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


def _match_files(api: HfApi, what: str, repo_id: str, repo_type: str, commit: str, path: str) -> list[RepoFile]:
    """Repo files named by ``path``: a file, a folder (its shards, recursively), a glob, with ``{...}`` braces."""
    alternatives = list(dict.fromkeys(_expand_braces(path)))
    exact = [a for a in alternatives if not _has_magic(a)]
    globs = [a for a in alternatives if _has_magic(a)]
    found: dict[str, RepoFile] = {}
    if exact:
        infos = []
        for i in range(0, len(exact), 100):
            infos += hub_call(
                what, api.get_paths_info, repo_id, exact[i : i + 100], revision=commit, repo_type=repo_type
            )
        by_path = {info.path: info for info in infos}
        missing = [p for p in exact if p not in by_path]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise HubNotFoundError(f"{what}: no such file or folder in the repo: {', '.join(missing[:5])}{more}")
        for p in exact:
            info = by_path[p]
            if isinstance(info, RepoFolder):
                files = [
                    f
                    for f in list_files(api, what, repo_id, repo_type, commit, info.path, True)
                    if f.path.endswith(SHARD_SUFFIXES)
                ]
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
                listings[key] = list_files(api, what, repo_id, repo_type, commit, key[0], key[1])
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


def resolve_hub_input(
    arg: str, *, keep_dir: Path | str | None = None, endpoint: str | None = None, token: str | bool | None = None
) -> list[HubShardSource]:
    """``hf://datasets/<owner>/<name>[@<rev>]/<path>`` -> shard sources pinned to the revision's commit.

    ``path`` may be a file (any name), a folder (its ``.tar`` shards, recursively) or a glob (``data/*.tar``,
    ``data/data-00000[0-9].tar``, ``**`` across folders; only ``.tar`` shards are kept), with shell-style braces
    for quoted arguments (``data/data-0000{00..09}.tar``; every expanded name without a wildcard must exist).
    Raises a `SourceError` subclass naming the argument when nothing matches, the repo/revision does not exist,
    or the Hub cannot be reached, and a `SourceError` naming the file when its name cannot be a shard id
    (`sources.base.shard_id_problem`: ``data/..tar``...). ``keep_dir``: where the sources keep a verified copy
    of what they read (``--keep-tars``; None: nowhere); `HubLocalFileError` (exit 2) when a name there is taken by
    something that cannot be that file (`keep.check_keep_dir`).
    """
    return resolve_hub_inputs([arg], keep_dir=keep_dir, endpoint=endpoint, token=token)


def resolve_hub_inputs(
    args: list[str], *, keep_dir: Path | str | None = None, endpoint: str | None = None, token: str | bool | None = None
) -> list[HubShardSource]:
    """`resolve_hub_input` for several arguments, resolving each repo revision to its commit once (all arguments
    naming the same ``repo@rev`` are pinned to the same commit, even if the branch moves meanwhile)."""
    kd = Path(keep_dir).expanduser().resolve() if keep_dir is not None else None
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
            commits[key] = resolve_commit(api, parsed.id, parsed.type, parsed.revision)
        commit = commits[key]
        files = _match_files(api, f"{arg} (commit {commit[:12]})", parsed.id, parsed.type, commit, path)
        for f in files:
            src = _source(f, repo_id=parsed.id, repo_type=parsed.type, commit=commit, endpoint=ep, keep_dir=kd)
            by_uri[src.uri] = src
    if kd is not None:  # before any work: a name in the keep dir taken by something that cannot be the file
        check_keep_dir(kd, ((s.path_in_repo, s.size) for s in by_uri.values()))
    return sorted(by_uri.values(), key=lambda s: natural_key(s.uri))


def with_keep_dir(sources: list[ShardSource], keep_dir: Path | str | None) -> list[ShardSource]:
    """The same sources, Hub ones set to keep their bytes in ``keep_dir`` (others unchanged)."""
    kd = str(Path(keep_dir).expanduser().resolve()) if keep_dir is not None else None
    return [replace(s, keep_dir=kd) if isinstance(s, HubShardSource) else s for s in sources]


__all__ = ["resolve_hub_input", "resolve_hub_inputs", "with_keep_dir"]
