"""Where dobaas keeps local caches (file listings, the index of large vaults, copy id maps): rebuilt from the
vault when lost, never the only copy of anything."""

from __future__ import annotations

import os


def cache_root() -> str:
    """DOBAAS_CACHE_DIR, else /var/cache/dobaas for root (the daemon) or ~/.cache/dobaas."""
    base = "/var/cache/dobaas" if os.geteuid() == 0 else os.path.expanduser("~/.cache/dobaas")
    return os.environ.get("DOBAAS_CACHE_DIR", base)
