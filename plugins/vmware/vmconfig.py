"""A VM's configuration as the snapshot saw it, reduced to what a restore needs (kept as plain JSON with the
snapshot), plus the full configuration serialized by pyvmomi for the technician."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugins.vmware.connection import pyvmomi

_PREFIX = (("IDEController", "ide"), ("SATAController", "sata"), ("AHCIController", "sata"),
           ("NVMEController", "nvme"), ("SCSIController", "scsi"), ("LsiLogicController", "scsi"),
           ("LsiLogicSASController", "scsi"), ("BusLogicController", "scsi"))


def vmodl_name(obj: Any) -> str:
    """``vim.vm.device.ParaVirtualSCSIController`` for an instance (what GetVmodlType takes back)."""
    return type(obj).__name__  # pyvmomi's class names are the dotted vmodl names


def bus_prefix(controller_type: str) -> str:
    short = controller_type.rsplit(".", 1)[-1]
    for suffix, prefix in _PREFIX:
        if short.endswith(suffix):
            return prefix
    return "disk"


@dataclass
class DiskInfo:
    key: int
    name: str  # scsi0:1, the name VMware administrators use
    capacity: int
    file: str  # [datastore] folder/name.vmdk
    change_id: str
    mode: str  # persistent, independent_persistent, …
    has_parent: bool
    backing_type: str


def disks(config: Any) -> list[DiskInfo]:
    vim, _ = pyvmomi()
    devices = config.hardware.device
    controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualController)}
    out = []
    for d in devices:
        if not isinstance(d, vim.vm.device.VirtualDisk):
            continue
        c = controllers.get(d.controllerKey)
        name = f"{bus_prefix(vmodl_name(c)) if c else 'disk'}{getattr(c, 'busNumber', 0)}:{d.unitNumber}"
        b = d.backing
        out.append(DiskInfo(d.key, name, d.capacityInBytes or d.capacityInKB * 1024, getattr(b, "fileName", ""),
                            getattr(b, "changeId", None) or "", getattr(b, "diskMode", "persistent") or "persistent",
                            getattr(b, "parent", None) is not None, vmodl_name(b)))
    return sorted(out, key=lambda x: x.name)


def summarize(config: Any) -> dict:
    """What a restore rebuilds the VM from."""
    vim, _ = pyvmomi()
    devices = config.hardware.device
    ctrl = [{"key": d.key, "type": vmodl_name(d), "bus_number": d.busNumber,
             "shared_bus": str(getattr(d, "sharedBus", "") or "")}
            for d in devices if isinstance(d, vim.vm.device.VirtualController)
            and bus_prefix(vmodl_name(d)) in ("scsi", "sata", "nvme", "ide")]
    dsk = [{"key": d.key, "name": i.name, "controller_key": d.controllerKey, "unit_number": d.unitNumber,
            "capacity": i.capacity, "file": i.file, "mode": i.mode,
            "thin": bool(getattr(d.backing, "thinProvisioned", False))}
           for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
           for i in disks(config) if i.key == d.key]
    nics = [{"type": vmodl_name(d), "network": getattr(d.backing, "deviceName", None),
             "mac": getattr(d, "macAddress", None)}
            for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    hw = config.hardware
    return {"name": config.name, "guest_id": config.guestId, "version": config.version,
            "num_cpu": hw.numCPU, "cores_per_socket": hw.numCoresPerSocket, "memory_mb": hw.memoryMB,
            "firmware": config.firmware, "annotation": config.annotation or "",
            "uuid": config.uuid, "instance_uuid": config.instanceUuid,
            "controllers": ctrl, "disks": dsk, "nics": nics}


def serialize(config: Any) -> str:
    from pyVmomi import SoapAdapter

    data = SoapAdapter.Serialize(config)
    return data.decode("utf-8") if isinstance(data, bytes) else data
