"""A shard stored in a Hub repo (`HubShardSource`) and what its ``open()`` returns: `HubStream`, a non-seekable
binary stream of the file read sequentially, hashed while read and verified against the Hub's LFS metadata.

Where the bytes come from (HTTP with ``Range`` resume, or a verified kept copy) is `transfer`'s business; keeping a
copy while reading (``--keep-tars``) is `keep`'s.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle3_etl.sources.base import ShardSource
from dalle3_etl.sources.hub.errors import HubError, HubIntegrityError, HubLocalFileError, HubTransferError
from dalle3_etl.sources.hub.keep import LEFT_AS_IT_IS, KeepWriter, in_the_way, kept_path, usable_copy
from dalle3_etl.sources.hub.ranges import BlockHashes

#: Stream tuning (tests lower CHUNK_SIZE and DRAIN_LIMIT).
CHUNK_SIZE = 1 << 20
#: A stream closed without error with at most this many bytes unread is read to the end and verified (a tar reader
#: stops at the end-of-archive blocks and leaves the record padding unread).
DRAIN_LIMIT = 4 << 20


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
    blocks: BlockHashes | None = field(default=None, compare=False, repr=False)  # a split shard's (`ranges`)

    def open(self) -> HubStream:
        return open_verified_stream(self, keep_dir=self.keep_dir)


def _new_hasher(src: HubShardSource):
    """(hasher, expected hex digest, label): sha256 for LFS files, git's blob sha1 for files stored in git."""
    if src.sha256:
        return hashlib.sha256(), src.sha256.lower(), "sha256"
    if src.blob_id:
        h = hashlib.sha1()
        h.update(b"blob %d\0" % src.size)
        return h, src.blob_id.lower(), "git blob sha1"
    return hashlib.sha256(), None, "sha256"


class HubStream(io.RawIOBase):
    """Non-seekable, verified, resuming binary stream of one Hub file; see `open_verified_stream`."""

    def __init__(
        self,
        source: HubShardSource,
        *,
        keep_dir: Path | str | None = None,
        token: str | bool | None = None,
        chunk_size: int | None = None,
        max_retries: int | None = None,
        drain_limit: int | None = None,
    ):
        super().__init__()
        self.source = source
        self.name = source.uri
        self.mode = "rb"
        self.digest: str | None = None  # hex digest once the whole file was read and matched
        self._path = source.path_in_repo
        self._size = source.size
        self._hasher, self._expected, self._algo = _new_hasher(source)
        self._drain_limit = DRAIN_LIMIT if drain_limit is None else drain_limit
        self._received = 0  # body bytes received, hashed (and kept) so far
        self._delivered = 0  # bytes handed to the reader
        self._buf = b""
        self._bufpos = 0
        self._done = False
        self._broken = False
        self._local: Path | None = None  # verified kept copy, read instead of the network
        self._keep: KeepWriter | None = None
        final = kept_path(keep_dir, self._path) if keep_dir is not None else None
        if final is not None and usable_copy(final, self._size):
            self._local = final
        elif final is not None and (why := in_the_way(final, self._size)) is not None:  # came after the run's check
            raise HubLocalFileError(f"{self._path}: {final} ({why}) is not the Hub's file; it is left as it is")
        from dalle3_etl.sources.hub.transfer import Body  # httpx and huggingface_hub: only for a Hub shard

        self._body = Body(
            source, local=self._local, token=token, chunk_size=chunk_size or CHUNK_SIZE, max_retries=max_retries
        )
        if final is not None and self._local is None:
            self._keep = KeepWriter(final)

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
        self._body.disconnect()
        keep, self._keep = self._keep, None
        if keep is not None and self._done:
            keep.close()
        elif keep is not None:
            keep.discard()

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
                if self._keep is not None:
                    self._keep.write(chunk)
                self._received += len(chunk)
            self._buf, self._bufpos = chunk, 0
            if self._received >= self._size:
                self._complete()
        return True

    def _next_chunk(self) -> bytes:
        try:
            return self._body.next_chunk(self._received)
        except HubError as exc:
            self._fail(exc)

    def _complete(self) -> None:
        self._body.disconnect()
        actual = self._hasher.hexdigest()
        if self._expected is not None and actual != self._expected:
            where = f"kept copy {self._local}" if self._local is not None else self.name
            left = f"; {LEFT_AS_IT_IS.format(self._local)}" if self._local is not None else ""
            self._fail(
                HubIntegrityError(
                    f"{self._path}: {self._algo} mismatch reading {where}: expected {self._expected}, got {actual} "
                    f"({self._received} bytes){left}"
                )
            )
        keep, self._keep = self._keep, None
        if keep is not None:
            try:
                keep.commit()
            except HubError as exc:
                self._fail(exc)
        self.digest = actual
        self._done = True


def open_verified_stream(
    source: HubShardSource, *, keep_dir: Path | str | None = None, token: str | bool | None = None, **kwargs: Any
) -> HubStream:
    """Open ``source`` for sequential reading over HTTP (see `HubStream`).

    Reading to the end raises `HubIntegrityError` (naming the file, expected and actual sha256) if the bytes do not
    match the Hub's LFS metadata; `HubStream.finish` reads what is left and verifies; closing the stream without
    error verifies too when at most `DRAIN_LIMIT` bytes were left. With ``keep_dir`` the file is written to
    a new ``keep_dir/<name>.<random>.part`` while read and moved to ``keep_dir/<name>`` once complete and verified
    (never over anything); a file of the right size already there is read instead of the network, and verified.
    """
    return HubStream(source, keep_dir=keep_dir, token=token, **kwargs)


__all__ = ["HubShardSource", "HubStream", "open_verified_stream", "CHUNK_SIZE", "DRAIN_LIMIT"]
