"""libvirt checkpoints named by dobaas: ``dobaas-<lineage>-<UTC time>``. Each checkpoint's QEMU bitmap records
every write since it was created (libvirt keeps all of them active), so an incremental needs only the one
checkpoint the previous snapshot recorded; the others are deleted once a newer snapshot is published, so bitmaps
do not pile up in the qcow2 images."""

from __future__ import annotations

import logging
import re
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
            w = _delete_without_lost_bitmaps(dom, n, e.get_error_message())
            if w:
                warnings.append(w)
    return warnings


def _delete_without_lost_bitmaps(dom: Any, name: str, error: str) -> str | None:
    """libvirt refuses to delete a checkpoint when one disk's bitmap is gone (the case a full capture recovers
    from). Redefine it without that disk, then delete it, so the other disks' bitmaps are removed too."""
    libvirt = libvirt_module()
    for _ in range(16):
        m = re.search(r"bitmap '[^']*' not found in backing chain of '([^']+)'", error)
        if not m:
            break
        try:
            cp = dom.checkpointLookupByName(name)
            root = ET.fromstring(cp.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SECURE))
            for d in root.findall("./disks/disk"):
                if d.get("name") == m.group(1):
                    d.set("checkpoint", "no")
                    d.attrib.pop("bitmap", None)
            cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            dom.checkpointCreateXML(ET.tostring(root, encoding="unicode"),
                                    libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)
            dom.checkpointLookupByName(name).delete(0)
            return None
        except libvirt.libvirtError as e:
            error = e.get_error_message()
    try:
        dom.checkpointLookupByName(name).delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    except libvirt.libvirtError:
        pass
    return f"checkpoint {name} could not be deleted cleanly ({error}); its metadata was removed"
