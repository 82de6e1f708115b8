"""The bytes of one Hub file from a given position on, for `stream.HubStream`: over HTTP, reconnecting with a
``Range`` request when the connection drops, or from a verified kept copy on disk.

Checks what the server says about the file (``Content-Range``, ``Content-Length``) against the size the Hub lists;
the hash is the stream's business.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx2
from huggingface_hub import constants, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

from dalle3_etl.sources.hub.client import hub_endpoint, one_line
from dalle3_etl.sources.hub.errors import HubError, HubIntegrityError, HubTransferError

logger = logging.getLogger(__name__)

#: Retry tuning (tests lower RETRY_WAIT).
MAX_RETRIES = 8  # consecutive failed attempts without any new byte before giving up
RETRY_WAIT = 1.0  # seconds before the first retry, doubled each time, capped by MAX_RETRY_WAIT
MAX_RETRY_WAIT = 30.0

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx2.TransportError):
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in (408, 429) or exc.response.status_code >= 500
    return False


class Body:
    """The body of one Hub file (a `stream.HubShardSource`), piece by piece from a position on.

    `next_chunk` reconnects when the connection drops and gives up after ``max_retries`` failed attempts in a row;
    every failure is raised as a `HubError` (the caller releases what it holds). With ``local`` (a verified kept
    copy) the bytes come from that file instead of the network. ``end``: stop there (a task's byte range, asked
    for with a bounded ``Range``; a server that ignores it sends the whole file, cut here).
    """

    def __init__(
        self,
        source,
        *,
        local: Path | None,
        token: str | bool | None,
        chunk_size: int,
        max_retries: int | None,
        end: int | None = None,
    ):
        self.source = source
        self._path = source.path_in_repo
        self._size = source.size
        self._end = source.size if end is None else end
        self._local = local
        self._token = token
        self._chunk_size = chunk_size
        self._max_retries = MAX_RETRIES if max_retries is None else max_retries
        self._skip = 0  # bytes to drop from the next body (a server that ignored our Range)
        self._stack: ExitStack | None = None
        self._iter: Iterator[bytes] | None = None

    def disconnect(self) -> None:
        self._iter = None
        stack, self._stack = self._stack, None
        if stack is not None:
            try:
                stack.close()
            except Exception:  # closing a broken connection may complain again; it is gone either way
                pass

    def next_chunk(self, received: int) -> bytes:
        """The next non-empty piece of the body after ``received`` bytes, reconnecting with a Range request when
        the connection drops."""
        failures = 0
        while True:
            error: BaseException | None = None
            try:
                if self._iter is None:
                    self._connect(received)
                chunk = next(self._iter, None)  # type: ignore[arg-type]
            except HubError:
                raise
            except Exception as exc:
                if not _transient(exc):
                    raise HubTransferError(f"{self._path}: reading {self.source.uri} failed: {one_line(exc)}") from exc
                error = exc
            else:
                if chunk is not None:
                    if self._skip:
                        drop = min(self._skip, len(chunk))
                        self._skip -= drop
                        chunk = chunk[drop:]
                    if not chunk:
                        continue
                    if received + len(chunk) > self._end and self._end < self._size:
                        chunk = chunk[: self._end - received]  # a range read from a body that goes on
                    if received + len(chunk) > self._size:
                        raise HubIntegrityError(
                            f"{self._path}: the server sent more than the {self._size} bytes the Hub lists for it"
                        )
                    return chunk
                if self._local is not None:
                    raise HubIntegrityError(f"{self._path}: kept copy {self._local} is shorter than expected")
            # the connection dropped (error) or the body ended before the file did (error is None)
            self.disconnect()
            failures += 1
            why = one_line(error) if error is not None else "body ended early"
            if failures > self._max_retries:
                raise HubTransferError(
                    f"{self._path}: gave up after {failures} attempts at byte {received} of {self._size} ({why})"
                )
            wait = min(RETRY_WAIT * 2 ** (failures - 1), MAX_RETRY_WAIT)
            logger.warning(
                "%s: %s at byte %d of %d; resuming in %.1fs (attempt %d/%d)",
                self._path,
                why,
                received,
                self._size,
                wait,
                failures,
                self._max_retries,
            )
            time.sleep(wait)

    def _connect(self, received: int) -> None:
        stack = ExitStack()
        if self._local is not None:
            fh = stack.enter_context(open(self._local, "rb"))
            fh.seek(received)
            self._stack = stack
            self._iter = iter(lambda: fh.read(min(self._chunk_size, self._end - fh.tell())), b"")
            return
        src = self.source
        url = hf_hub_url(
            src.repo_id,
            src.path_in_repo,
            repo_type=src.repo_type,
            revision=src.commit,
            endpoint=hub_endpoint(src.endpoint),
        )
        headers = build_hf_headers(token=self._token)
        headers["Accept-Encoding"] = "identity"
        if received or self._end < self._size:
            headers["Range"] = f"bytes={received}-" + (str(self._end - 1) if self._end < self._size else "")
        try:
            resp = stack.enter_context(
                http_stream_backoff("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT)
            )
            hf_raise_for_status(resp)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._check_response(resp, url, received)
        # Chunks as they arrive (a fixed chunk size would lose the partial chunk when the connection drops), cut
        # to at most chunk_size so the reader sees steady progress.
        self._iter = _pieces(resp.iter_bytes(), self._chunk_size)

    def _check_response(self, resp, url: str, received: int) -> None:
        """A 206 for the range asked, or a 200 (Range ignored: the body starts over), of the size the Hub lists."""
        if resp.status_code == 206:
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if m is None or int(m[1]) != received or int(m[2]) >= self._end:
                raise HubTransferError(
                    f"{self._path}: asked for bytes {received}-{self._end - 1} but got Content-Range "
                    f"{resp.headers.get('Content-Range')!r}"
                )
            if m[3] != "*" and int(m[3]) != self._size:
                raise HubIntegrityError(f"{self._path}: the server has {m[3]} bytes, the Hub lists {self._size}")
        elif resp.status_code == 200:
            self._skip = received  # Range ignored: the body starts over
            if received:
                logger.warning("%s: the server ignored a Range request; reading from its start", self._path)
            length = resp.headers.get("Content-Length")
            if (
                length is not None
                and resp.headers.get("Content-Encoding", "identity") == "identity"
                and int(length) != self._size
            ):
                raise HubIntegrityError(f"{self._path}: the server sends {length} bytes, the Hub lists {self._size}")
        else:
            raise HubTransferError(f"{self._path}: unexpected HTTP {resp.status_code} from {url}")


def _pieces(chunks: Iterator[bytes], size: int) -> Iterator[bytes]:
    for chunk in chunks:
        if len(chunk) <= size:
            yield chunk
        else:
            for i in range(0, len(chunk), size):
                yield chunk[i : i + size]


__all__ = ["Body", "MAX_RETRIES", "RETRY_WAIT", "MAX_RETRY_WAIT"]
