"""Restore a whole virtual machine: the core writes each disk of the snapshot to a raw file and proves it equals
the snapshot (every block re-read and re-hashed); the VM's plugin then makes the new machine from the saved
configuration (format conversion, definition, start)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable

from orchestrator.errors import IntegrityError, UsageError
from orchestrator.plugin import registry
from orchestrator.plugin.base import MachineRestoreOptions
from orchestrator.restore.image import compare_image, restore_image
from orchestrator.vault.repository import Vault
from orchestrator.vault.snapshot import Snapshot


def _staging_root() -> str:
    """/var/tmp (disk-backed, unlike a tmpfs /tmp: VM disks are large)."""
    os.makedirs("/var/tmp", exist_ok=True)
    return "/var/tmp"


def restore_vm(vault: Vault, snap: Snapshot, options: MachineRestoreOptions,
               progress: Callable[[str, int], Callable[[int], None] | None] | None = None) -> dict:
    """``options``: ``name`` (new VM name), ``target_dir``, ``format``, ``start`` and plugin-specific ones."""
    t0 = time.monotonic()
    plugin = registry.load(snap.meta.get("plugin", ""))
    images = [i for i in snap.items if i["type"] == "image"]
    if not images:  # whether the rest makes a VM is the plugin's to say (check_machine_restore)
        raise UsageError(f"snapshot {snap.id[:12]} ({snap.name}) is not a virtual machine snapshot")
    try:
        plugin.check_machine_restore(snap.meta, options)
    except NotImplementedError as e:
        raise UsageError(str(e)) from None
    kept_dir = plugin.machine_staging_dir(options)
    target_dir = kept_dir or tempfile.mkdtemp(prefix="dobaas-restore-", dir=_staging_root())
    os.makedirs(target_dir, exist_ok=True)
    files: dict[str, str] = {}
    written = 0
    try:
        for item in images:
            path = os.path.join(target_dir, f"{options['name']}-{item['name']}.raw")
            what = f"snapshot {snap.id[:12]} disk {item['name']}"
            st = restore_image(vault, item, path, progress=progress(item["name"], item["size"]) if progress else None,
                               what=what)
            files[item["name"]] = path
            written += st.bytes_written
            bad = compare_image(vault, item, path, what)
            if bad:
                raise IntegrityError(f"{what}: the restored file differs from the snapshot at offset {bad[0]} "
                                     f"({len(bad)} block(s))")
        result = plugin.restore_machine(snap.meta, files, options)
    except BaseException:
        for path in files.values():
            if os.path.exists(path):
                os.unlink(path)
        raise
    finally:
        if kept_dir is None:
            shutil.rmtree(target_dir, ignore_errors=True)
    return {"id": snap.id, "snapshot_time": snap.time, "source": snap.name, **result,
            "bytes_written": written, "verified": "every block re-read and matched the snapshot",
            "seconds": round(time.monotonic() - t0, 3)}
