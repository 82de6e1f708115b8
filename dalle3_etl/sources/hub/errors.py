"""The Hub's errors, each an `EtlError` with the exit code the command line gives it.

Not found, unreachable while resolving inputs, a bad ``--shards`` selection, a local file in the way of a file to
save: usage errors (exit 2), refused before any work. Bytes that do not match the Hub's metadata, a transfer that failed for good: exit 1 (raised while a
shard is read, they fail that shard).
"""

from __future__ import annotations

from dalle3_etl.errors import EtlError, UsageError
from dalle3_etl.sources.base import SourceError


class HubError(EtlError):
    """Base class of the Hub errors."""


class HubNotFoundError(HubError, SourceError):
    """The repo, revision, path or shard asked for does not exist (or is not visible with this token)."""


class HubUnavailableError(HubError, SourceError):
    """The Hub could not be reached or answered with an error while resolving inputs."""


class HubIntegrityError(HubError):
    """Bytes read from the Hub do not match the size or sha256 of the Hub's LFS metadata."""


class HubTransferError(HubError, OSError):
    """Reading a file from the Hub failed for good (the connection kept dropping, or an HTTP error)."""


class HubLocalFileError(HubError, UsageError):
    """A file already where a Hub file would be saved (``--keep-tars DIR``, ``download``'s folder) that cannot be
    that file (another size, a folder, a dangling link): left as it is; refused before any work (exit 2)."""


class ShardSelectionError(HubError, UsageError, ValueError):
    """A ``--shards`` selection such as ``0-9,12`` could not be parsed."""


__all__ = [
    "HubError",
    "HubNotFoundError",
    "HubUnavailableError",
    "HubIntegrityError",
    "HubTransferError",
    "HubLocalFileError",
    "ShardSelectionError",
]
