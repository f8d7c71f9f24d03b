"""Disk data through the datastore HTTP interface (``/folder``) with the API session's cookie: Range reads of a
snapshot's flat extent (the backup's data path), and uploads of restored disks. VDDK transports (NBD, hot-add,
SAN) are not used; this is the interface every vCenter and ESXi host serves."""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import quote

from orchestrator.plugin.blocks import Extent
from orchestrator.plugin.errors import DobaasError, NotFound
from plugins.vmware.connection import Session

log = logging.getLogger(__name__)

TIMEOUT = 120.0
RETRIES = 4
UPLOAD_BLOCK = 1 << 20
_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.*)$")
_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)\s+"([^"]+)"', re.MULTILINE)


def parse_ds_path(file_name: str) -> tuple[str, str]:
    """``[datastore1] vm/disk.vmdk`` -> (``datastore1``, ``vm/disk.vmdk``)."""
    m = _DS_PATH.match(file_name)
    if not m:
        raise DobaasError(f"cannot read the datastore path {file_name!r}")
    return m.group("ds"), m.group("path")


class DatastoreHttp:
    """HTTPS to the host's /folder interface: one connection per thread, TLS trusted as for the API."""

    def __init__(self, session: Session, datacenter: str) -> None:
        self.session, self.datacenter = session, datacenter
        self._local = threading.local()

    def url(self, datastore: str, path: str) -> str:
        return f"/folder/{quote(path)}?dcPath={quote(self.datacenter)}&dsName={quote(datastore)}"

    def _conn(self, fresh: bool = False) -> http.client.HTTPSConnection:
        c = getattr(self._local, "conn", None)
        if c is not None and fresh:
            c.close()
            c = None
        if c is None:
            s = self.session
            c = http.client.HTTPSConnection(s.host, s.port, context=s.trust.context(), timeout=TIMEOUT,
                                            blocksize=UPLOAD_BLOCK)
            c.connect()
            s.trust.check_peer(c.sock, f"{s.host}:{s.port}")
            self._local.conn = c
        return c

    def request(self, method: str, url: str, what: str, headers: dict | None = None,
                body: Any = None, ok: tuple[int, ...] = (200,)) -> http.client.HTTPResponse:
        """Send and return the response with an accepted status; reconnect and retry transient failures (a
        request with a streamed body is not retried here: the caller rewinds it)."""
        hdrs = {"Cookie": self.session.cookie, **(headers or {})}
        attempts = 1 if body is not None and not isinstance(body, bytes) else RETRIES
        last = ""
        for attempt in range(attempts):
            try:
                c = self._conn(fresh=attempt > 0)
                c.request(method, url, body=body, headers=hdrs)
                r = c.getresponse()
            except (OSError, http.client.HTTPException) as e:
                last = str(e) or type(e).__name__
                time.sleep(min(0.2 * 2**attempt, 3))
                continue
            if r.status in ok:
                return r
            text = r.read(512).decode("utf-8", "replace").strip()
            if r.status == 401:
                raise DobaasError(f"{what}: the host refused the API session for datastore access (HTTP 401); "
                                  "does the user have the Datastore.Browse and Datastore.FileManagement "
                                  "privileges?")
            if r.status == 404:
                raise NotFound(f"{what}: no such file on the datastore (HTTP 404)")
            last = f"HTTP {r.status} {text[:200]}"
            if r.status < 500:
                break
            time.sleep(min(0.2 * 2**attempt, 3))
        raise DobaasError(f"{what}: {last}")

    def get_small(self, datastore: str, path: str, limit: int = 1 << 16) -> bytes:
        what = f"[{datastore}] {path}"
        r = self.request("GET", self.url(datastore, path), what, {"Range": f"bytes=0-{limit - 1}"},
                         ok=(200, 206, 416))
        data = r.read() if r.status == 416 else r.read(limit)  # 416: an empty file has no byte 0
        if r.status == 200:
            self._conn(fresh=True)  # the rest of a file larger than the limit is not wanted
        return b"" if r.status == 416 else data

    def upload(self, datastore: str, path: str, src: BinaryIO, size: int,
               progress: Callable[[int], None] | None = None) -> str:
        """PUT a file; returns the SHA-256 of what was sent (to compare with a read-back)."""
        h = hashlib.sha256()

        class Body:
            def read(self, n: int = UPLOAD_BLOCK) -> bytes:
                b = src.read(n)
                h.update(b)
                if progress and b:
                    progress(len(b))
                return b

        what = f"uploading [{datastore}] {path}"
        r = self.request("PUT", self.url(datastore, path), what,
                         {"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                         body=Body(), ok=(200, 201, 204))
        r.read()
        return h.hexdigest()

    def sha256(self, datastore: str, path: str) -> tuple[str, int]:
        """Read a whole file back and hash it."""
        r = self.request("GET", self.url(datastore, path), f"reading back [{datastore}] {path}")
        h, n = hashlib.sha256(), 0
        while chunk := r.read(UPLOAD_BLOCK):
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest(), n

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()


def flat_extent(http_: DatastoreHttp, backing_file: str) -> tuple[str, str]:
    """The datastore and path of a disk's data extent, from its descriptor. A disk whose descriptor names a
    sparse or delta extent (a VM that had snapshots of its own) cannot be read as a flat image here."""
    ds, path = parse_ds_path(backing_file)
    try:
        text = http_.get_small(ds, path).decode("utf-8", "replace")
    except NotFound:
        text = ""
    extents = _EXTENT.findall(text)
    if not extents:  # a descriptor that names no extent (the simulator's empty ones): the usual flat name
        return ds, path[:-5] + "-flat.vmdk" if path.endswith(".vmdk") else path
    if len(extents) != 1 or extents[0][2] not in ("VMFS", "FLAT"):
        kinds = ", ".join(e[2] for e in extents)
        raise DobaasError(f"disk {backing_file} is stored as {kinds} extents: only flat (thick or thin VMFS) disks "
                          "can be read through the datastore interface; consolidate the VM's own snapshots first")
    folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    return ds, folder + extents[0][3]


class DatastoreDisk:
    """BlockReader over a flat extent with HTTP Range requests; ``allocated`` (from CBT's ``*`` query) lets a
    full capture skip what was never written."""

    def __init__(self, http_: DatastoreHttp, datastore: str, path: str, size: int, what: str,
                 allocated: list[Extent] | None = None) -> None:
        self.http, self.datastore, self.path, self.size, self.what = http_, datastore, path, size, what
        self.url = http_.url(datastore, path)
        self.allocated = allocated
        self.bytes_read = 0
        self._lock = threading.Lock()

    def data_ranges(self) -> list[Extent] | None:
        return self.allocated

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = min(len(buf), self.size - offset)
        if n <= 0:
            return 0
        what = f"{self.what}: reading {n} bytes at offset {offset}"
        for attempt in range(RETRIES):
            r = self.http.request("GET", self.url, what, {"Range": f"bytes={offset}-{offset + n - 1}"},
                                  ok=(206, 200))
            got = 0
            try:
                if r.status == 200 and (offset or n != self.size):  # a server that ignored the Range header
                    raise DobaasError(f"{what}: the host ignored the byte range (HTTP 200)")
                while got < n:
                    k = r.readinto(buf[got:n])
                    if not k:
                        break
                    got += k
            except (OSError, http.client.HTTPException) as e:
                log.warning("%s: %s (attempt %d)", what, e, attempt + 1)
                self.http._conn(fresh=True)
                continue
            if got == n:
                with self._lock:
                    self.bytes_read += n
                return n
            self.http._conn(fresh=True)
        raise DobaasError(f"{what}: the connection kept breaking ({RETRIES} attempts)")

    def close(self) -> None:
        self.http.close()
