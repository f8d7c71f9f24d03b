"""Where dobaas keeps local caches (file listings, snapshot names, the index of large vaults, copy id maps): rebuilt
from the vault when lost, never the only copy of anything. Caches that hold what the vault says are authenticated
with a key derived from the vault's (``cache_key``): a damaged or foreign file is ignored, never trusted."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterable

import blake3

log = logging.getLogger(__name__)

MAC_LEN = 32


def cache_root() -> str:
    """DOBAAS_CACHE_DIR, else /var/cache/dobaas for root (the daemon) or ~/.cache/dobaas."""
    base = "/var/cache/dobaas" if os.geteuid() == 0 else os.path.expanduser("~/.cache/dobaas")
    return os.environ.get("DOBAAS_CACHE_DIR", base)


def cache_key(mac_key: bytes, purpose: str) -> bytes:
    """The key authenticating one kind of cache file, derived from a vault's MAC key."""
    return blake3.blake3(mac_key, derive_key_context=f"dobaas {purpose} v1").digest()


def read_authenticated(path: str, key: bytes, what: str) -> memoryview | None:
    """The body of a file ``write_authenticated`` wrote with ``key`` (not copied out of what was read); None when
    there is none, or when it fails authentication."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    end = len(data) - MAC_LEN
    if end < 0 or blake3.blake3(memoryview(data)[:end], key=key).digest() != data[end:]:
        log.warning("%s %s fails authentication; ignored", what, path)
        return None
    return memoryview(data)[:end]


def write_authenticated(path: str, key: bytes, parts: Iterable[bytes], what: str) -> bool:
    """Write ``parts`` (one at a time: never the whole body in memory) and their MAC aside, then rename the file
    over ``path``, so a reader never sees half of it. A failure is logged and only costs a cache miss."""
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    mac = blake3.blake3(key=key)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            for part in parts:
                mac.update(part)
                f.write(part)
            f.write(mac.digest())
        os.replace(tmp, path)
        return True
    except OSError as e:
        log.info("%s not written (%s); it is read from the vault instead", what, e)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
