"""A disk image item in a standard format: raw (sparse), or qcow2 / VHDX / VMDK converted from it by qemu-img,
the tool that reads all four back. The raw file is written first (every chunk
authenticated, as `dobaas restore image` does); a converted file exists under its name only once qemu-img has
finished."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable

from orchestrator.errors import DobaasError, UsageError
from orchestrator.restore.image import restore_image
from orchestrator.vault.records import Item
from orchestrator.vault.repository import Vault

#: qemu-img options per format: dynamic VHDX (what Hyper-V makes), stream-optimized VMDK (what OVF packages
#: carry: vSphere's "Deploy OVF Template", ovftool and VirtualBox import it), qcow2 as KVM uses it
CONVERT_OPTIONS = {"qcow2": [], "vhdx": ["-o", "subformat=dynamic"], "vmdk": ["-o", "subformat=streamOptimized"]}


def export_image(vault: Vault, item: Item, fmt: str, dest: str, progress: Callable[[int], None] | None,
                 what: str) -> None:
    """Write ``item`` to ``dest`` in ``fmt`` (``dest`` must not exist; ``dest + '.raw.partial'`` is scratch)."""
    if fmt != "raw" and fmt not in CONVERT_OPTIONS:
        raise UsageError(f"unknown image format {fmt!r} (raw, qcow2, vhdx, vmdk)")
    raw = dest if fmt == "raw" else dest + ".raw.partial"
    for leftover in {raw, dest}:
        if os.path.exists(leftover):
            os.unlink(leftover)
    try:
        restore_image(vault, item, raw, progress=progress, what=what)
        if fmt == "raw":
            return
        p = subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, *CONVERT_OPTIONS[fmt], raw, dest],
                           capture_output=True, text=True)
        if p.returncode:
            if "No space left on device" in p.stderr:
                raise OSError(errno.ENOSPC, "No space left on device (qemu-img convert)")
            raise DobaasError(f"{what}: qemu-img convert to {fmt} failed: {p.stderr.strip()}")
    except BaseException:
        if os.path.exists(dest):
            os.unlink(dest)
        raise
    finally:
        if raw != dest and os.path.exists(raw):
            os.unlink(raw)
