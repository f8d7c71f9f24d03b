"""The fixed cost of a backup run inside the daemon (``dobaas daemon`` runs policies in its own process): the
vault opened again for each run as the daemon does, its keys derived once per process, then an image backup
told that nothing changed. Prints the median of five runs after a first one (seconds, JSON)."""

from __future__ import annotations

import json
import sys
import time

from orchestrator.backup.image import backup_image_file
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault


def main() -> None:
    vault_dir, image, name, passphrase = sys.argv[1:5]
    times = []
    for _ in range(6):
        t0 = time.monotonic()
        vault = Vault.open(LocalBackend(vault_dir), passphrase)
        backup_image_file(vault, image, name, extents=[])
        times.append(time.monotonic() - t0)
    print(json.dumps({"first": times[0], "median": sorted(times[1:])[2]}))


if __name__ == "__main__":
    main()
