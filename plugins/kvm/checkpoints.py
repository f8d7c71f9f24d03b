"""libvirt checkpoints named by dobaas: ``dobaas-<lineage>-<UTC time>``. Each checkpoint's QEMU bitmap records
every write since it was created (libvirt keeps all of them active), so an incremental needs only the one
checkpoint the previous snapshot recorded; the others are deleted once a newer snapshot is published, so bitmaps
do not pile up in the qcow2 images."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from plugins.kvm.connection import libvirt_module

log = logging.getLogger(__name__)


def prefix(lineage: str) -> str:
    return f"dobaas-{lineage}-"


def new_name(lineage: str) -> str:
    return prefix(lineage) + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def xml(name: str, targets: dict[str, bool]) -> str:
    """Checkpoint XML: a bitmap for the disks that get one ({target: tracked})."""
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    disks = ET.SubElement(root, "disks")
    for t, tracked in targets.items():
        ET.SubElement(disks, "disk", {"name": t, "checkpoint": "bitmap" if tracked else "no"})
    return ET.tostring(root, encoding="unicode")


def tracked_disks(dom: Any, name: str) -> set[str] | None:
    """Disks with a bitmap in checkpoint ``name``; None when libvirt does not know the checkpoint."""
    libvirt = libvirt_module()
    try:
        cp = dom.checkpointLookupByName(name)
        root = ET.fromstring(cp.getXMLDesc(0))
    except libvirt.libvirtError:
        return None
    return {d.get("name", "") for d in root.findall("./disks/disk") if d.get("checkpoint") == "bitmap"}


def ours(dom: Any, lineage: str) -> list[str]:
    """This lineage's checkpoints, oldest first (the name sorts by time)."""
    p = prefix(lineage)
    return sorted(c.getName() for c in dom.listAllCheckpoints(0) if c.getName().startswith(p))


def delete(dom: Any, names: list[str]) -> list[str]:
    """Delete checkpoints (and their bitmaps); return a warning per one that could not be deleted."""
    libvirt = libvirt_module()
    warnings = []
    for n in names:
        try:
            dom.checkpointLookupByName(n).delete(0)
        except libvirt.libvirtError as e:
            warnings.append(f"checkpoint {n} could not be deleted ({e.get_error_message()})")
    return warnings
