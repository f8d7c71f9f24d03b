"""Storage backends: the only place that knows where vault objects physically live.

The interface is deliberately tiny (put/get/get_range/exists/list/delete of named, write-once blobs) so that
SFTP and S3 backends can be added without touching the vault format. Names are slash-separated relative paths
such as ``data/ab/ab12…`` or ``config``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Backend(Protocol):
    """Write-once blob storage. ``put`` never overwrites; ``delete`` is for provider maintenance only."""

    #: human-readable location, used in messages ("/srv/vault", "sftp://host/repo")
    location: str

    def put(self, name: str, data: bytes | memoryview) -> None:
        """Store a new object durably; raise AlreadyExists if the name is taken."""

    def get(self, name: str) -> bytes:
        """Return the whole object; raise ObjectMissing if absent."""

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes at ``offset`` (negative offset: from the end)."""

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield (name, size) of complete objects below the directory ``prefix``."""

    def delete(self, name: str) -> None: ...

    def close(self) -> None: ...


class AlreadyExists(Exception):
    """A write-once name is already taken."""


class ObjectMissing(Exception):
    """The named object does not exist."""


class ObjectLocked(PermissionError):
    """Object storage refuses to delete a version still under Object Lock retention (provider maintenance keeps
    it and tries again later; the vault stays consistent either way). ``until``: the retention's end (ISO 8601
    UTC) when the storage said it."""

    def __init__(self, message: str, until: str | None = None) -> None:
        super().__init__(message)
        self.until = until
