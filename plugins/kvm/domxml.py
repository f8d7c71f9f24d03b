"""The parts of a libvirt domain XML that backup and restore need: its disks, and a copy for a new domain."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass
class Disk:
    target: str  # vda, sdb … (the item name in the snapshot)
    kind: str  # file | block | network | volume
    path: str | None  # image file or block device on the host
    fmt: str  # qcow2, raw …
    readonly: bool


def disks(xml: str) -> list[Disk]:
    """The domain's disks (device='disk'; CD-ROMs and floppies are not backed up)."""
    out = []
    for d in ET.fromstring(xml).findall("./devices/disk"):
        if d.get("device", "disk") != "disk":
            continue
        target = d.find("target")
        if target is None or not target.get("dev"):
            continue
        src = d.find("source")
        path = None if src is None else (src.get("file") or src.get("dev"))
        drv = d.find("driver")
        out.append(Disk(target.get("dev", ""), d.get("type", "file"), path,
                        (drv.get("type") if drv is not None else None) or "raw", d.find("readonly") is not None))
    return out


def for_restore(xml: str, name: str, disk_paths: dict[str, tuple[str, str]]) -> str:
    """The saved domain XML made into a new domain: new name, no UUID (libvirt makes one), every backed-up
    disk pointing at its restored file ({target: (path, format)}), disks that were not backed up removed, no
    MAC addresses (libvirt makes new ones, so the copy can run next to the original), no CD-ROM media."""
    root = ET.fromstring(xml)
    root.find("name").text = name  # type: ignore[union-attr]
    for tag in ("uuid", "metadata", "genid"):
        for el in root.findall(tag):
            root.remove(el)
    devices = root.find("devices")
    assert devices is not None
    for d in list(devices.findall("disk")):
        target = d.find("target")
        dev = target.get("dev") if target is not None else None
        if d.get("device", "disk") != "disk":
            for src in d.findall("source"):
                d.remove(src)
            continue
        if dev not in disk_paths:
            devices.remove(d)
            continue
        path, fmt = disk_paths[dev]
        d.set("type", "file")
        for el in d.findall("source") + d.findall("backingStore"):
            d.remove(el)
        src = ET.SubElement(d, "source", {"file": path})
        d.remove(src)
        d.insert(1 if d.find("driver") is not None else 0, src)
        drv = d.find("driver")
        if drv is None:
            drv = ET.Element("driver", {"name": "qemu"})
            d.insert(0, drv)
        drv.set("type", fmt)
    for iface in devices.findall("interface"):
        for mac in iface.findall("mac"):
            iface.remove(mac)
    return ET.tostring(root, encoding="unicode")
