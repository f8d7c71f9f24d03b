"""The filesystems inside a disk image, mounted read-only so one file can be copied out of a VM backup without
restoring the disk: the partition table read by sfdisk, each partition's type probed by blkid at its offset,
and mounted through a read-only loop device (``mount -o ro,loop,offset=…``; the loop device goes away with the
mount). Journals are never replayed (ext4 ``noload``, XFS ``norecovery``): the backup is not written to."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass

from orchestrator.errors import DobaasError, NotFound

log = logging.getLogger(__name__)
SECTOR = 512
#: mount options per filesystem type: read-only and without journal replay where the driver would do one
RO_OPTIONS = {"ext2": "ro", "ext3": "ro,noload", "ext4": "ro,noload", "xfs": "ro,norecovery", "btrfs": "ro",
              "vfat": "ro", "ntfs": "ro"}
#: the driver mount(8) is asked for: NTFS through ntfs-3g (FUSE) when the kernel has no ntfs3
DRIVERS = {"ntfs": "ntfs-3g"}


@dataclass
class Partition:
    number: int  # 0: a filesystem on the whole disk (no partition table)
    start: int  # bytes
    size: int
    fstype: str  # as blkid names it; "" when none was recognised


def _probe(image: str, start: int, size: int) -> str:
    p = subprocess.run(["blkid", "-p", "-O", str(start), "-S", str(size), "-o", "value", "-s", "TYPE", image],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def partitions(image: str) -> list[Partition]:
    """The partitions of the disk image file ``image`` (GPT or MBR), or the whole disk when it holds a
    filesystem without a partition table."""
    size = os.path.getsize(image)
    p = subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True)
    parts: list[Partition] = []
    if p.returncode == 0 and p.stdout.strip():
        table = json.loads(p.stdout)["partitiontable"]
        sector = int(table.get("sectorsize", SECTOR))
        for n, entry in enumerate(table.get("partitions", []), 1):
            suffix = entry["node"][len(image):] if entry["node"].startswith(image) else ""
            number = int(suffix) if suffix.isdigit() else n  # sfdisk names them IMAGE1, IMAGE2, …
            start, length = int(entry["start"]) * sector, int(entry["size"]) * sector
            parts.append(Partition(number, start, length, _probe(image, start, length)))
    if not parts:
        fstype = _probe(image, 0, size)
        if fstype:
            parts.append(Partition(0, 0, size, fstype))
    return parts


def choose(parts: list[Partition], number: int | None, what: str) -> Partition:
    """The partition asked for (``None``: the only one with a filesystem)."""
    usable = [p for p in parts if p.fstype in RO_OPTIONS]
    if number is None:
        if len(usable) != 1:
            shown = ", ".join(f"{p.number} ({p.fstype or 'unknown'})" for p in parts) or "none"
            raise NotFound(f"{what}: choose a partition with --partition (partitions: {shown})")
        return usable[0]
    for p in parts:
        if p.number == number:
            if p.fstype not in RO_OPTIONS:
                raise DobaasError(f"{what}: partition {number} holds {p.fstype or 'no filesystem known here'} "
                                  f"(readable: {', '.join(sorted(RO_OPTIONS))})")
            return p
    raise NotFound(f"{what}: no partition {number} (partitions: "
                   f"{', '.join(str(p.number) for p in parts) or 'none'})")


def mount_partition(image: str, part: Partition, target: str) -> None:
    """Mount ``part`` of ``image`` read-only on ``target`` (an empty directory)."""
    opts = f"{RO_OPTIONS[part.fstype]},loop,offset={part.start},sizelimit={part.size}"
    driver = DRIVERS.get(part.fstype, part.fstype)
    p = subprocess.run(["mount", "-t", driver, "-o", opts, image, target], capture_output=True, text=True)
    if p.returncode:
        raise DobaasError(f"cannot mount partition {part.number} ({part.fstype}) of {image} read-only: "
                          f"{p.stderr.strip() or p.stdout.strip()}")
    log.info("mounted partition %s (%s) of %s on %s", part.number, part.fstype, image, target)


def unmount(target: str) -> None:
    """Unmount ``target``; lazily when it is busy (a shell still in it), so the loop device is freed once free."""
    if subprocess.run(["umount", target], capture_output=True).returncode:
        subprocess.run(["umount", "-l", target], capture_output=True)
