"""Local directory backend: the embedded default.

Objects are written to a temporary file in the target directory, fsynced, then hard-linked to their final name
(link fails if the name exists, which gives write-once semantics without a check-then-act race) and the directory
is fsynced. A crash leaves at most a ``.tmp-*`` file, which listing ignores and maintenance removes.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Iterator

from orchestrator.errors import NotFound, StorageFull
from orchestrator.vault.backend import AlreadyExists, ObjectMissing

TMP_PREFIX = ".tmp-"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class LocalBackend:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.location = self.root
        self._known_dirs: set[str] = set()

    def _path(self, name: str) -> str:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"invalid object name {name!r}")
        return os.path.join(self.root, name)

    def _ensure_dir(self, d: str) -> None:
        if d in self._known_dirs:
            return
        os.makedirs(d, exist_ok=True)
        self._known_dirs.add(d)

    def put(self, name: str, data: bytes | memoryview) -> None:
        final = self._path(name)
        d = os.path.dirname(final)
        self._ensure_dir(d)
        tmp = os.path.join(d, TMP_PREFIX + secrets.token_hex(8))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise AlreadyExists(name) from None
            _fsync_dir(d)
        except OSError as e:
            if e.errno in _FULL_ERRNOS:
                raise StorageFull(f"vault storage at {self.root} is full ({e.strerror}) while writing {name}") from e
            raise
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def get(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectMissing(name) from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectMissing(name) from None
        try:
            if offset < 0:
                offset = max(0, os.fstat(fd).st_size + offset)
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._path(prefix.rstrip("/"))
        if not os.path.isdir(base):
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            for f in files:
                if f.startswith(TMP_PREFIX):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    continue
                yield (f if rel == "." else f"{rel}/{f}"), size

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            raise ObjectMissing(name) from None

    def make_layout(self, dirs: Iterable[str]) -> None:
        for d in dirs:
            self._ensure_dir(self._path(d))

    def remove_temporaries(self) -> int:
        """Delete leftovers of interrupted writes (maintenance only). Returns how many were removed."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                if f.startswith(TMP_PREFIX):
                    os.unlink(os.path.join(dirpath, f))
                    removed += 1
        return removed

    def close(self) -> None:
        pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_local(path: str, must_exist: bool = True) -> LocalBackend:
    if must_exist and not os.path.isfile(os.path.join(path, "config")):
        raise NotFound(f"no vault at {os.path.abspath(path)} (no 'config' file; create one with 'dobaas vault init')")
    return LocalBackend(path)
