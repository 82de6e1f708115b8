"""An `hf://` shard scanned over HTTP and read in byte ranges (issue 18), against the loopback fake Hub: the scan's
requests and bytes, one bounded Range request per task, every block checked against the sha256-verified scan."""

from __future__ import annotations

import hashlib
import pickle
import time
from dataclasses import replace

import pytest
from fakehub import FakeHub, hub_env, make_shard  # noqa: F401  (fixture)

from dalle3_etl.run.tasks import scan_points
from dalle3_etl.settings import Settings
from dalle3_etl.shard.hubsplit import HubPoints, scan_hub
from dalle3_etl.sources.hub import transfer
from dalle3_etl.sources.hub.errors import HubIntegrityError
from dalle3_etl.sources.hub.ranges import BlockHashes, block_size_for, covering, fetch_range
from dalle3_etl.sources.hub.resolve import resolve_hub_input
from dalle3_etl.sources.resolve import resolve_inputs

S = "data/data-000000.tar"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(transfer, "RETRY_WAIT", 0.01)


@pytest.fixture
def hub(hub_env):  # noqa: F811
    with FakeHub({S: make_shard(0, samples=60)}) as fake:
        hub_env.point_to(fake)
        yield fake


def _served(hub: FakeHub) -> list[tuple[str | None, int, int]]:
    """(Range, status, body bytes sent) of the GETs of the shard; the server logs the bytes after its write returns,
    which may come just after the client has them all."""
    deadline = time.monotonic() + 5
    while any(g.body_bytes == 0 for g in hub.gets(S)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [(g.range, g.status, g.body_bytes) for g in hub.gets(S)]


def _scanned(hub: FakeHub):
    (src,) = resolve_hub_input(hub.uri(S))
    points = scan_hub(src, Settings(task_bytes=src.size // 4))
    assert isinstance(points, HubPoints) and len(points) >= 2
    blocks = BlockHashes.from_json(points.blocks, src.size)
    assert blocks is not None
    return replace(src, blocks=blocks), points


def test_the_scan_reads_the_shard_once_and_finds_the_points_of_a_local_scan(hub, tmp_path):
    data = hub.files[S]
    local = tmp_path / "data-000000.tar"
    local.write_bytes(data)
    (local_src,) = resolve_inputs([str(local)])
    hub.clear_log()
    src, points = _scanned(hub)
    assert tuple(points) == scan_points(local_src, Settings(task_bytes=len(data) // 4))
    assert _served(hub) == [(None, 200, len(data))]  # one request, every byte
    block = block_size_for(len(data))
    assert src.blocks.sha256 == tuple(
        hashlib.sha256(data[i : i + block]).hexdigest() for i in range(0, len(data), block)
    )
    assert pickle.loads(pickle.dumps(points)).blocks == points.blocks  # through the scan pool


def test_a_shard_not_matching_the_hub_sha256_is_not_split(hub):
    hub.corrupt(S)
    (src,) = resolve_hub_input(hub.uri(S))
    assert scan_hub(src, Settings(task_bytes=src.size // 4)) == ()  # converted whole, which fails it


@pytest.mark.parametrize("which", [0, 1, -1])
def test_a_task_reads_its_blocks_with_one_bounded_range_request(hub, tmp_path, which):
    src, points = _scanned(hub)
    bounds = [0, *points, None]
    start, end = bounds[which if which >= 0 else len(bounds) - 2], bounds[which + 1 if which >= 0 else -1]
    lo, hi = covering(src.size, src.blocks.block, start, end)
    assert lo <= start and (end is None and hi == src.size or end is not None and end <= hi)
    hub.clear_log()
    path = fetch_range(src, src.blocks, start, end, tmp_path / "spool")
    got = path.read_bytes()
    assert len(got) == hi and got[lo:] == hub.files[S][lo:hi] and got[:lo] == bytes(lo)  # at the shard's offsets
    want = f"bytes={lo}-" + (str(hi - 1) if hi < src.size else "")
    assert _served(hub) == [(want, 206, hi - lo)]


def test_a_dropped_range_is_resumed_within_its_bounds(hub, tmp_path):
    src, points = _scanned(hub)
    lo, hi = covering(src.size, src.blocks.block, points[0], points[1])
    hub.clear_log()
    hub.cut(S, after=1000)
    path = fetch_range(src, src.blocks, points[0], points[1], tmp_path / "spool")
    assert path.read_bytes()[lo:] == hub.files[S][lo:hi]
    assert [(g.range, g.status) for g in hub.gets(S)] == [
        (f"bytes={lo}-{hi - 1}", 206),
        (f"bytes={lo + 1000}-{hi - 1}", 206),
    ]


def test_bytes_changed_on_the_server_after_the_scan_fail_the_task(hub, tmp_path):
    src, points = _scanned(hub)
    bad = bytearray(hub.files[S])
    bad[points[0] + 700] ^= 0x01
    hub.corrupt(S, bytes(bad))
    with pytest.raises(HubIntegrityError, match="differ from the bytes checked against the Hub's sha256"):
        fetch_range(src, src.blocks, points[0], points[1], tmp_path / "spool")
    # a range that does not cover the changed byte still reads
    fetch_range(src, src.blocks, points[1], None, tmp_path / "spool2")


def test_a_server_ignoring_range_still_gives_the_range(hub, tmp_path):
    src, points = _scanned(hub)
    lo, hi = covering(src.size, src.blocks.block, points[1], points[2] if len(points) > 2 else None)
    hub.ignore_range = True
    hub.clear_log()
    path = fetch_range(src, src.blocks, points[1], points[2] if len(points) > 2 else None, tmp_path / "spool")
    assert path.read_bytes()[lo:] == hub.files[S][lo:hi]
    assert [g.status for g in hub.gets(S)] == [200]  # the start of the file read and dropped


def test_a_kept_copy_is_read_instead_of_the_network_and_checked(hub, tmp_path):
    keep = tmp_path / "keep"
    (src,) = resolve_inputs([hub.uri(S)], keep_dir=keep)
    points = scan_hub(src, Settings(task_bytes=src.size // 4))
    assert (keep / "data-000000.tar").read_bytes() == hub.files[S]  # the scan kept the verified tar
    src = replace(src, blocks=BlockHashes.from_json(points.blocks, src.size))
    hub.clear_log()
    assert fetch_range(src, src.blocks, points[0], points[1], tmp_path / "spool") == keep / "data-000000.tar"
    assert hub.gets(S) == []
    damaged = bytearray(hub.files[S])
    damaged[points[0] + 3] ^= 0x01
    (keep / "data-000000.tar").write_bytes(bytes(damaged))
    with pytest.raises(HubIntegrityError, match="data-000000.tar is left as it is"):
        fetch_range(src, src.blocks, points[0], points[1], tmp_path / "spool")
    assert sorted(p.name for p in keep.iterdir()) == ["data-000000.tar"]  # not moved, not replaced
    assert (keep / "data-000000.tar").read_bytes() == bytes(damaged)
