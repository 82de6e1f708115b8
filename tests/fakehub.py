"""A fake Hugging Face Hub on 127.0.0.1 for tests (stdlib only), and fixtures pointing the real client at it.

The real ``huggingface_hub`` client talks to it over HTTP; nothing is mocked on the client side. It answers the
endpoints that `dalle3_etl.sources.hub` makes the client call:

* ``GET /api/datasets/<ns>/<name>[/revision/<rev>]``        repo info (``sha`` = commit of the revision)
* ``GET /api/datasets/<ns>/<name>/tree/<rev>[/<path>]``      tree listing (``recursive``), LFS ``oid``/``size``
* ``POST /api/datasets/<ns>/<name>/paths-info/<rev>``        paths info (form field ``paths``, repeated)
* ``HEAD|GET /datasets/<ns>/<name>/resolve/<rev>/<path>``    file bytes, with ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range`` requests answered with 206/416; with ``cdn=True``
  LFS files are instead redirected (302, metadata headers on the redirect) to ``http://localhost:<port>/cdn/...``,
  another origin, as the real Hub redirects to its CDN

Faults, to test the client's recovery and our checks:

* `FakeHub.cut(path, after=N)`: the next GET of ``path`` sends its headers (full ``Content-Length``) and ``N``
  bytes of body, then closes the connection;
* `FakeHub.corrupt(path)`: ``path`` is served with damaged bytes while the listing and headers keep advertising
  the original size and sha256;
* `FakeHub.ignore_range = True`: ``Range`` headers are ignored (200 and the whole file), as some servers do.

Every request is logged (`FakeHub.log`, `FakeHub.gets`) so a test can assert e.g. that a resumed transfer sent
``Range: bytes=N-`` and got a 206.

Use from any test module::

    from fakehub import FakeHub, fake_hub, hub_env, make_shards  # noqa: F401  (fixtures)

    def test_x(fake_hub):                 # a hub serving make_shards(3) under data/, client pointed at it
        fake_hub.repo_id, fake_hub.endpoint, fake_hub.files
    def test_y(hub_env):                  # only the client environment; start your own FakeHub(files)
        with FakeHub({"data/data-000000.tar": b"..."}) as hub:
            hub_env.point_to(hub)
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import socket
import struct
import tarfile
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

DEFAULT_REPO = "ProGamerGov/synthetic-dataset-1m-dalle3-high-quality-captions"
LFS_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".parquet", ".png", ".jpg", ".jpeg")


# -- shards ----------------------------------------------------------------------------------------


def _png(width: int, height: int, rng: random.Random) -> bytes:
    """A valid, incompressible RGB PNG (stored deflate blocks of random pixels)."""
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")


def make_shard(index: int, samples: int = 12, side: int = 48, seed: int = 0) -> bytes:
    """A small deterministic DALLE-3-like shard: ``<key>.json`` + ``<key>.png`` per sample, plain GNU tar."""
    rng = random.Random(seed * 1_000_003 + index)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(samples):
            key = f"{index:06d}{i:04d}"
            w, h = side + rng.randrange(0, 16), side + rng.randrange(0, 16)
            image = _png(w, h, rng)
            meta = {
                "image_name": f"{key}.png",
                "width": w,
                "height": h,
                "resolution": f"{w}x{h}",
                "short_caption": f"sample {i} of shard {index}",
                "long_caption": f"a longer caption for {key}",
                "md5_file_hash": hashlib.md5(image).hexdigest(),
                "source": "fakehub",
            }
            for name, data in ((f"{key}.json", json.dumps(meta).encode()), (f"{key}.png", image)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 1_700_000_000, 0o644, 1000, 1000
                info.uname = info.gname = "user"
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_shards(n: int = 3, **kw) -> dict[str, bytes]:
    """``{"data/data-000000.tar": bytes, ...}`` for shards 0..n-1."""
    return {f"data/data-{i:06d}.tar": make_shard(i, **kw) for i in range(n)}


def files_from_dir(root: Path, prefix: str = "data/", pattern: str = "*.tar") -> dict[str, bytes]:
    """Files of a local folder (e.g. a `synth.write_corpus` output) as repo files under ``prefix``."""
    return {prefix + p.name: p.read_bytes() for p in sorted(Path(root).glob(pattern)) if p.is_file()}


# -- the server ------------------------------------------------------------------------------------


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(data: bytes) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()


@dataclass
class Logged:
    method: str
    path: str  # URL path, unquoted
    query: dict
    range: str | None
    status: int = 0
    body_bytes: int = 0  # body bytes actually sent
    file: str | None = None  # repo path whose bytes (or redirect) this request got
    headers: dict = field(default_factory=dict)  # request headers, names lower-cased


class FakeHub:
    """Serves one dataset repo. ``files`` = ``{path: bytes}`` of the first commit (on ``main``)."""

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        *,
        repo_id: str = DEFAULT_REPO,
        lfs_suffixes: tuple[str, ...] = LFS_SUFFIXES,
        cdn: bool = False,
    ):
        self.repo_id = repo_id
        self.cdn = cdn  # redirect LFS files to a "CDN" on another origin, as the Hub does
        self.lfs_suffixes = lfs_suffixes
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._cuts: dict[str, list[int]] = {}  # path -> [after, times]
        self._corrupt: dict[str, bytes] = {}
        self.ignore_range = False  # answer Range requests with 200 and the whole file
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.push(files if files is not None else make_shards(3), message="initial")

    # -- repo content --------------------------------------------------------------------------
    def push(self, files: dict[str, bytes], *, replace: bool = False, branch: str = "main", message: str = "") -> str:
        """New commit on ``branch`` adding/overwriting ``files`` (or replacing all with ``replace``). Returns its sha."""
        parent = self.refs.get(branch)
        tree = {} if replace or parent is None else dict(self.commits[parent])
        tree.update(files)
        sha = hashlib.sha1(
            repr((parent, message, sorted((p, hashlib.sha256(b).hexdigest()) for p, b in tree.items()))).encode()
        ).hexdigest()
        with self._lock:
            self.commits[sha] = tree
            self.refs[branch] = sha
        return sha

    @property
    def files(self) -> dict[str, bytes]:
        return self.commits[self.refs["main"]]

    @property
    def commit(self) -> str:
        return self.refs["main"]

    def sha256(self, path: str, revision: str = "main") -> str:
        return hashlib.sha256(self._tree(revision)[path]).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(self.lfs_suffixes)

    # -- faults --------------------------------------------------------------------------------
    def cut(self, path: str, after: int, times: int = 1) -> None:
        """The next ``times`` GETs of ``path`` stop after ``after`` body bytes and drop the connection."""
        with self._lock:
            self._cuts[path] = [after, times]

    def corrupt(self, path: str, data: bytes | None = None) -> None:
        """Serve ``data`` (default: the file with one byte flipped in the middle) instead of the real bytes."""
        if data is None:
            real = bytearray(self.files[path])
            real[len(real) // 2] ^= 0xFF
            data = bytes(real)
        with self._lock:
            self._corrupt[path] = data

    def heal(self, path: str | None = None) -> None:
        with self._lock:
            if path is None:
                self._cuts.clear()
                self._corrupt.clear()
            else:
                self._cuts.pop(path, None)
                self._corrupt.pop(path, None)

    # -- log -----------------------------------------------------------------------------------
    def gets(self, path: str | None = None) -> list[Logged]:
        """Logged GETs that were answered with file bytes (not redirects), optionally of one repo path only."""
        with self._lock:
            entries = list(self.log)
        return [
            e
            for e in entries
            if e.method == "GET" and e.file is not None and e.status != 302 and (path is None or e.file == path)
        ]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def uri(self, path: str, revision: str | None = None) -> str:
        rev = f"@{revision}" if revision else ""
        return f"hf://datasets/{self.repo_id}{rev}/{path}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakehub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------
    def _tree(self, revision: str) -> dict[str, bytes]:
        sha = self.refs.get(revision, revision)
        return self.commits[sha]

    def _resolve_rev(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None

    def _entry(self, path: str, data: bytes) -> dict:
        entry = {"type": "file", "path": path, "size": len(data)}
        if self.is_lfs(path):
            pointer = _lfs_pointer(data)
            entry["oid"] = git_blob_sha1(pointer)
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
        else:
            entry["oid"] = git_blob_sha1(data)
        return entry

    @staticmethod
    def _dirs(tree: dict[str, bytes]) -> set[str]:
        out = set()
        for p in tree:
            parts = p.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out

    def _dir_entry(self, path: str) -> dict:
        return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0}

    def _listing(self, tree: dict[str, bytes], base: str, recursive: bool) -> list[dict] | None:
        dirs = self._dirs(tree)
        if base and base not in dirs:
            return None
        prefix = base + "/" if base else ""
        out = []
        for d in sorted(dirs):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
                out.append(self._dir_entry(d))
        for p in sorted(tree):
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :]):
                out.append(self._entry(p, tree[p]))
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a client that stops reading mid-body (an abandoned stream) is normal here
        super().handle_error(request, client_address)


_API = re.compile(r"^/api/datasets/([^/]+/[^/]+)(?:/(revision|tree|paths-info)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing ------------------------------------------------------------------------------
    def _begin(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        self._logged = Logged(
            self.command,
            unquote(parts.path),
            parse_qs(parts.query),
            self.headers.get("Range"),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        with self.fake._lock:
            self.fake.log.append(self._logged)
        return parts.path, parse_qs(parts.query)

    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json"
    ) -> None:
        self._logged.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self._logged.body_bytes = len(body)

    def _json(self, obj, headers: dict | None = None) -> None:
        self._send(200, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        h = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
        self._send(status, json.dumps({"error": message}).encode(), h)

    # -- verbs ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        self._route()

    def _route(self) -> None:
        path, query = self._begin()
        m = _API.match(path)
        if m:
            return self._api(unquote(m[1]), m[2], unquote(m[3]) if m[3] else None, unquote(m[4]) if m[4] else "", query)
        m = _RESOLVE.match(path)
        if m:
            return self._resolve(unquote(m[1]), unquote(m[2]), unquote(m[3]))
        if path.startswith("/cdn/"):
            return self._cdn(query)
        self._error(404, "NotFound", f"no route for {path}")

    def _api(self, repo_id: str, kind: str | None, revision: str | None, sub: str, query: dict) -> None:
        hub = self.fake
        if repo_id != hub.repo_id:
            return self._error(404, "RepoNotFound", "Repository not found")
        sha = hub._resolve_rev(revision or "main")
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        tree = hub.commits[sha]
        if kind in (None, "revision"):
            if self.command != "GET":
                return self._error(405, "MethodNotAllowed", "GET only")
            return self._json(
                {
                    "id": hub.repo_id,
                    "author": hub.repo_id.split("/")[0],
                    "sha": sha,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "tags": [],
                    "lastModified": "2024-06-01T00:00:00.000Z",
                    "siblings": [{"rfilename": p} for p in sorted(tree)],
                }
            )
        if kind == "tree":
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            listing = hub._listing(tree, sub.strip("/"), recursive)
            if listing is None:
                return self._error(404, "EntryNotFound", f"{sub} does not exist on {revision}")
            return self._json(listing)
        if kind == "paths-info":
            form = parse_qs(getattr(self, "_body", b"").decode())
            dirs = hub._dirs(tree)
            out = []
            for p in form.get("paths", []):
                p = p.strip("/")
                if p in tree:
                    out.append(hub._entry(p, tree[p]))
                elif p in dirs:
                    out.append(hub._dir_entry(p))
            return self._json(out)
        self._error(404, "NotFound", kind)

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        hub = self.fake
        if repo_id != hub.repo_id:
            return self._error(404, "RepoNotFound", "Repository not found")
        sha = hub._resolve_rev(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        tree = hub.commits[sha]
        if path not in tree:
            return self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": sha})
        self._logged.file = path
        real = tree[path]
        entry = hub._entry(path, real)
        headers = {"X-Repo-Commit": sha}
        if "lfs" in entry:
            headers["ETag"] = f'"{entry["lfs"]["oid"]}"'
            headers["X-Linked-Etag"] = f'"{entry["lfs"]["oid"]}"'
            headers["X-Linked-Size"] = str(len(real))
            if hub.cdn:
                # Like the Hub: LFS files redirect to a CDN on another origin ("localhost" instead of "127.0.0.1"),
                # the metadata headers being on the redirect itself.
                port = self.server.server_address[1]
                headers["Location"] = f"http://localhost:{port}/cdn/{entry['lfs']['oid']}?path={quote(path)}&rev={sha}"
                return self._send(302, b"", headers)
        else:
            headers["ETag"] = f'"{entry["oid"]}"'
        self._serve_file(path, real, headers)

    def _cdn(self, query: dict) -> None:
        hub = self.fake
        path, sha = query.get("path", [""])[0], query.get("rev", [""])[0]
        tree = hub.commits.get(sha, {})
        if path not in tree:
            return self._error(404, "NotFound", "no such blob")
        self._logged.file = path
        self._serve_file(path, tree[path], {"ETag": f'"{hashlib.sha256(tree[path]).hexdigest()}"'})

    def _serve_file(self, path: str, real: bytes, headers: dict) -> None:
        hub = self.fake
        headers = {**headers, "Accept-Ranges": "bytes"}
        with hub._lock:
            data = hub._corrupt.get(path, real)
            cut = None
            if self.command == "GET" and path in hub._cuts:
                after, times = hub._cuts[path]
                cut = after
                if times <= 1:
                    del hub._cuts[path]
                else:
                    hub._cuts[path][1] = times - 1
        status, start, end = 200, 0, len(data)
        rng = self.headers.get("Range")
        if rng and not hub.ignore_range:
            m = _RANGE.match(rng.strip())
            if not m:
                return self._error(416, "RangeNotSatisfiable", rng, {"Content-Range": f"bytes */{len(data)}"})
            start = int(m[1])
            end = min(int(m[2]) + 1, len(data)) if m[2] else len(data)
            if start >= len(data) or start >= end:
                return self._error(416, "RangeNotSatisfiable", rng, {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        if cut is None or self.command == "HEAD":
            return self._send(status, body, headers, "application/octet-stream")
        # Send the headers of the whole body, part of it, then drop the connection.
        self._logged.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        sent = body[:cut]
        self.wfile.write(sent)
        self.wfile.flush()
        self._logged.body_bytes = len(sent)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# -- pointing the real client at the fake hub -------------------------------------------------------


class HubEnv:
    """Points huggingface_hub (already imported) at a fake hub: env vars AND the constants read at import."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, home: Path):
        import huggingface_hub.constants as C

        self._mp = monkeypatch
        self._C = C
        home.mkdir(parents=True, exist_ok=True)
        for var in (
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_OIDC_RESOURCE",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_XET_CACHE",
            "HF_TOKEN_PATH",
        ):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_HOME", str(home))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for name, value in {
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "AGENT_HARNESSES_PATH": str(home / "agent_harnesses.json"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_PROGRESS_BARS": True,
        }.items():
            if hasattr(C, name):
                monkeypatch.setattr(C, name, value)

    def point_to(self, hub: FakeHub) -> FakeHub:
        endpoint = hub.endpoint
        self._mp.setenv("HF_ENDPOINT", endpoint)
        self._mp.setattr(self._C, "ENDPOINT", endpoint)
        self._mp.setattr(self._C, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        return hub


def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail fast (instead of leaving the machine) if anything tries to resolve a non-loopback host."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else host
        if h not in (None, "127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(f"fakehub tests: refusing to resolve {h!r} (no network in tests)")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
def hub_env(monkeypatch, tmp_path) -> HubEnv:
    """huggingface_hub configured for tests: tmp HF_HOME, no token, no telemetry, not offline, loopback only."""
    _loopback_only(monkeypatch)
    return HubEnv(monkeypatch, tmp_path / "hf_home")


@pytest.fixture
def fake_hub(hub_env, request) -> FakeHub:
    """A started FakeHub serving `make_shards(3)` (+ a README) with the client pointed at it; stopped after.

    ``@pytest.mark.parametrize("fake_hub", ["direct", "cdn"], indirect=True)`` runs a test in both serving modes.
    """
    files = {
        "README.md": b"# fake dalle3\n",
        ".gitattributes": b"*.tar filter=lfs diff=lfs merge=lfs -text\n",
        **make_shards(3),
    }
    with FakeHub(files, cdn=getattr(request, "param", "direct") == "cdn") as hub:
        hub_env.point_to(hub)
        yield hub
