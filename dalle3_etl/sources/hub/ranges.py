"""An `hf://` shard read in byte ranges (tasks of a split shard, `shard.hubsplit`), still checked against the Hub's
sha256 of the whole file.

SHA-256 cannot be put together from pieces, so the check is done in two steps:

* the header scan reads the whole shard once, sequentially (`HubStream`: verified against the Hub's sha256, kept
  with ``--keep-tars``), through `ForwardReader`, and hashes it in blocks of `block_size_for(size)` bytes on the
  way (`BlockHashes`, recorded in the shard's task plan only when the whole file matched);
* a task downloads the blocks that cover its range with one bounded ``Range`` request (`fetch_range`: retried and
  resumed as whole-file reads are, `transfer.Body`) and checks each block against the recorded hashes before a
  byte of it is converted. So every converted byte is one the Hub's sha256 vouched for.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle3_etl.sources.hub.errors import HubIntegrityError
from dalle3_etl.sources.hub.keep import LEFT_AS_IT_IS, kept_path, usable_copy

if TYPE_CHECKING:
    from dalle3_etl.sources.hub.transfer import Body

BLOCK_MIN = 64 << 10
BLOCK_MAX = 4 << 20  # 2,400 hashes (150 KB of plan) for a 10 GB shard
CHUNK = 1 << 20


def block_size_for(size: int) -> int:
    """The verification block of a shard: about 1/1024 of it, a power of two between 64 KiB and 4 MiB."""
    block = BLOCK_MIN
    while block < BLOCK_MAX and block * 1024 < size:
        block *= 2
    return block


@dataclass(frozen=True)
class BlockHashes:
    """sha256 of each `block`-byte block of a shard (the last one may be shorter), from a verified read."""

    block: int
    sha256: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"block": self.block, "sha256": list(self.sha256)}

    @classmethod
    def from_json(cls, obj: Any, size: int) -> BlockHashes | None:
        """The hashes recorded for a shard of `size` bytes, None when `obj` is not a complete record of them."""
        if not isinstance(obj, dict) or not isinstance(obj.get("block"), int) or obj["block"] <= 0:
            return None
        hashes = obj.get("sha256")
        if not isinstance(hashes, list) or len(hashes) != -(-size // obj["block"]):
            return None
        if not all(isinstance(h, str) and len(h) == 64 for h in hashes):
            return None
        return cls(obj["block"], tuple(hashes))


class BlockHasher:
    """Hashes bytes fed in order from `start` (a block boundary) in blocks; `on_block(index, hexdigest)` per block."""

    def __init__(self, block: int, on_block: Callable[[int, str], None], start: int = 0):
        self.block = block
        self.index = start // block
        self.on_block = on_block
        self._h = hashlib.sha256()
        self._filled = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = min(len(view), self.block - self._filled)
            self._h.update(view[:n])
            self._filled += n
            view = view[n:]
            if self._filled == self.block:
                self._close()

    def flush(self) -> None:
        """Close the last, shorter block (at the end of the file)."""
        if self._filled:
            self._close()

    def _close(self) -> None:
        self.on_block(self.index, self._h.hexdigest())
        self.index += 1
        self._h = hashlib.sha256()
        self._filled = 0


class ForwardReader(io.RawIOBase):
    """A seekable view of a forward-only stream (for the header scan): a seek forward reads and drops the bytes on
    the way, a seek back is allowed into the last `KEEP` bytes only. Every byte pulled goes to `feed`, in order."""

    KEEP = 64 << 10

    def __init__(self, stream, size: int, feed: Callable[[bytes], None]):
        super().__init__()
        self._stream = stream
        self._size = size
        self._feed = feed
        self._buf = bytearray()
        self._base = 0  # offset of _buf[0]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, b) -> int:
        if self._pos < self._base:
            raise OSError(f"cannot go back to byte {self._pos} of a stream read up to {self._base + len(self._buf)}")
        while self._pos >= self._base + len(self._buf):
            if not self._pull():
                return 0
        view = memoryview(b).cast("B")
        i = self._pos - self._base
        n = min(len(view), len(self._buf) - i)
        view[:n] = self._buf[i : i + n]
        self._pos += n
        return n

    def drain(self) -> None:
        """Read the rest of the stream (so all of it is hashed and verified)."""
        self._pos = self._size
        while self._pull():
            pass

    def _pull(self) -> bool:
        drop = min(max(0, self._pos - self.KEEP - self._base), len(self._buf))
        if drop:
            del self._buf[:drop]
            self._base += drop
        chunk = self._stream.read(CHUNK)
        if not chunk:
            return False
        self._feed(chunk)
        self._buf += chunk
        return True


def covering(size: int, block: int, start: int, end: int | None) -> tuple[int, int]:
    """The whole blocks [lo, hi) that cover bytes [start, end) of a shard of `size` bytes (`end` None: to the end)."""
    stop = size if end is None else end
    return start // block * block, min(size, -(-stop // block) * block)


def _checker(src, blocks: BlockHashes, where: str) -> Callable[[int, str], None]:
    def check(index: int, digest: str) -> None:
        if digest != blocks.sha256[index]:
            lo = index * blocks.block
            raise HubIntegrityError(
                f"{src.path_in_repo}: bytes {lo}-{min(src.size, lo + blocks.block) - 1} read from {where} differ from "
                f"the bytes checked against the Hub's sha256 when the shard was scanned (block sha256 "
                f"{blocks.sha256[index]}, got {digest})"
            )

    return check


def fetch_range(src, blocks: BlockHashes, start: int, end: int | None, spool: Path, *, token=None) -> Path:
    """The bytes of [start, end) of `src`, checked block by block: a verified kept copy (``--keep-tars``) when there
    is one, else downloaded with one bounded Range request into `spool` (a new file, sparse: the bytes at their
    offsets in the shard, so offsets read from it are the shard's). Returns the file to read."""
    lo, hi = covering(src.size, blocks.block, start, end)
    kept = kept_path(src.keep_dir, src.path_in_repo) if src.keep_dir else None
    local = kept if kept is not None and usable_copy(kept, src.size) else None
    hasher = BlockHasher(blocks.block, _checker(src, blocks, str(local or src.uri)), lo)
    from dalle3_etl.sources.hub.transfer import Body  # httpx and huggingface_hub: only for a Hub shard

    body = Body(src, local=local, token=token, chunk_size=CHUNK, max_retries=None, end=hi)
    out = None if local is not None else open(spool, "xb")
    try:
        _copy_checked(body, hasher, out, lo, hi, src.size)
    except HubIntegrityError as exc:
        if local is None:
            raise
        raise HubIntegrityError(f"{exc}; {LEFT_AS_IT_IS.format(local)}") from exc
    finally:
        body.disconnect()
        if out is not None:
            out.close()
    return local if local is not None else spool


def _copy_checked(body: Body, hasher: BlockHasher, out, lo: int, hi: int, size: int) -> None:
    """Bytes [lo, hi) from `body` through `hasher` (which raises on a bad block), into `out` at their offsets."""
    if out is not None:
        out.seek(lo)
    received = lo
    while received < hi:
        chunk = body.next_chunk(received)
        hasher.feed(chunk)
        if out is not None:
            out.write(chunk)
        received += len(chunk)
    if hi == size:
        hasher.flush()


__all__ = ["BlockHashes", "BlockHasher", "ForwardReader", "block_size_for", "covering", "fetch_range"]
