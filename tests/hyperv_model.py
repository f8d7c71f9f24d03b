"""A model Hyper-V host behind the WS-Man double: the handlers of the hyperv plugin's shipped scripts.

Its virtual disks are real VHDX files (made and written by qemu-img / qemu-io) in a folder of the real Samba
share, so the plugin's data path — libvhdi reading VHDX over SMB — is the real one. The model's guest records
every range it writes, so Resilient Change Tracking answers are exact (rounded to RCT_GRANULE, as RCT tracks
blocks, not bytes). What it models of Hyper-V: Get-VM/Get-VHD output, production checkpoints (and a guest that
cannot quiesce), RCT ids that a VM move or RCT reset invalidates, reference points, New-VM. What it does not:
the differencing disks a real checkpoint creates (the model's guest does not write during a capture), WMI
itself, VSS inside a guest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.wsman import ScriptFailure

RCT_GRANULE = 64 * 1024


@dataclass
class Disk:
    host_path: str
    local: str
    size: int
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    seq: int = 0
    writes: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, offset, length)

    def rct_id(self) -> str:
        return f"rctX:{self.epoch}:{self.seq}"


@dataclass
class Vm:
    name: str
    id: str
    disks: list[Disk]
    generation: int = 2
    state: str = "Running"
    cpus: int = 2
    memory: int = 2 * 2**30
    switches: list[str] = field(default_factory=lambda: ["LAN"])
    vss_fails: bool = False
    checkpoints: dict[str, dict] = field(default_factory=dict)  # id -> {"name", "rct": {path: id}}


class HypervModel:
    def __init__(self, share_dir: str, host_root: str = "D:\\VMs") -> None:
        self.share_dir = share_dir  # the local folder the share's URL points to
        self.host_root = host_root
        self.vms: dict[str, Vm] = {}
        self.reference_points: dict[str, dict] = {}  # id -> {"vm", "disks": [(path, rct)]}

    @classmethod
    def on_share(cls, share_dir: str, double: Any) -> tuple[HypervModel, str]:
        """A model host whose storage is a new folder of the Samba share, answering behind ``double``: the model
        and the folder's name (its storage map is ``{"D:\\VMs": <share URL>/<folder>}``)."""
        from tests.samba import share_folder

        folder, path = share_folder(share_dir, "hv")
        model = cls(path)
        double.handlers = model.handlers()
        return model, folder

    # ---- the model's world ------------------------------------------------------------------------------
    def local(self, host_path: str) -> str:
        if not host_path.lower().startswith(self.host_root.lower() + "\\"):
            raise ScriptFailure(f"Cannot find path '{host_path}' because it does not exist.")
        return os.path.join(self.share_dir, *host_path[len(self.host_root) + 1 :].split("\\"))

    def add_vm(self, name: str, sizes_mib: list[int], **kw: Any) -> Vm:
        disks = []
        for i, mib in enumerate(sizes_mib):
            host = f"{self.host_root}\\{name}\\{name}-{i}.vhdx"
            local = self.local(host)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic", local, f"{mib}M"],
                           check=True)
            disks.append(Disk(host, local, mib * 2**20))
        vm = Vm(name, str(uuid.uuid4()), disks, **kw)
        self.vms[vm.id] = vm
        return vm

    def guest_write(self, vm: Vm, disk: int, offset: int, data: bytes) -> None:
        """The guest writes: real bytes into the VHDX (qemu-io), and RCT records the range."""
        d = vm.disks[disk]
        tmp = d.local + ".pattern"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            cmd = f"write -s {tmp} {offset} {len(data)}"
            p = subprocess.run(["qemu-io", "-f", "vhdx", "-c", cmd, d.local], capture_output=True, text=True)
            assert p.returncode == 0 and "error" not in p.stdout.lower(), p.stdout + p.stderr
        finally:
            os.unlink(tmp)
        d.seq += 1
        d.writes.append((d.seq, offset, len(data)))

    def reset_rct(self, vm: Vm) -> None:
        """The VM moved to another host (or its RCT was reset): every earlier RCT id is invalid."""
        for d in vm.disks:
            d.epoch = uuid.uuid4().hex[:8]

    def raw(self, local_vhdx: str, out: str) -> bytes:
        subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", local_vhdx, out], check=True)
        with open(out, "rb") as f:
            return f.read()

    def _vm(self, vm_id: str) -> Vm:
        if vm_id not in self.vms:
            raise ScriptFailure(f"Hyper-V was unable to find a virtual machine with ID '{vm_id}'.")
        return self.vms[vm_id]

    def _disk(self, host_path: str) -> Disk:
        for vm in self.vms.values():
            for d in vm.disks:
                if d.host_path.lower() == host_path.lower():
                    return d
        raise ScriptFailure(f"The system cannot find the file specified: '{host_path}'.")

    # ---- the scripts' handlers (what the cmdlets and WMI methods would answer) ---------------------------
    def handlers(self) -> dict[str, Any]:
        return {"Get-DobaasVm.ps1": self.get_vm, "New-DobaasCheckpoint.ps1": self.new_checkpoint,
                "Get-DobaasDiskChanges.ps1": self.disk_changes, "Convert-DobaasCheckpoint.ps1": self.convert,
                "Remove-DobaasCheckpoint.ps1": self.remove, "Test-DobaasRestoreTarget.ps1": self.test_target,
                "New-DobaasRestoredVm.ps1": self.new_vm}

    def _describe(self, vm: Vm) -> dict:
        return {"Name": vm.name, "Id": vm.id, "Generation": vm.generation, "State": vm.state,
                "ProcessorCount": vm.cpus, "MemoryStartupBytes": vm.memory, "DynamicMemory": False,
                "SecureBoot": vm.generation == 2, "Version": "10.0",
                "NetworkAdapters": [{"Name": "Network Adapter", "SwitchName": s, "MacAddress": "00155D010203"}
                                    for s in vm.switches],
                "Disks": [{"ControllerType": "SCSI" if vm.generation == 2 else "IDE", "ControllerNumber": 0,
                           "ControllerLocation": i, "Path": d.host_path, "VhdType": "Dynamic", "Size": d.size,
                           "ParentPath": ""} for i, d in enumerate(vm.disks)]}

    def get_vm(self, p: dict) -> Any:
        names = [n.lower() for n in p.get("Name") or []]
        found = [self._describe(v) for v in self.vms.values() if not names or v.name.lower() in names]
        return found  # ConvertTo-Json -InputObject @(...): an array, even of one

    def new_checkpoint(self, p: dict) -> Any:
        vm = self._vm(p["VmId"])
        name = f"dobaas-{p['Lineage']}"
        stale = [cid for cid, c in vm.checkpoints.items() if c["name"] == name]
        for cid in stale:
            del vm.checkpoints[cid]
        consistency = "application"
        if vm.vss_fails:
            if not p.get("AllowCrashConsistent"):
                raise ScriptFailure("production checkpoint failed (guest could not quiesce): Checkpoint operation "
                                    "for 'VM' failed. (Virtual machine ID …) Production checkpoints cannot be created")
            consistency = "crash"
        cid = str(uuid.uuid4())
        vm.checkpoints[cid] = {"name": name, "rct": {d.host_path: d.rct_id() for d in vm.disks}}
        desc = self._describe(vm)
        return {"CheckpointId": cid, "Name": name, "Consistency": consistency, "RemovedStale": [name] * len(stale),
                "Disks": [{k: d[k] for k in ("Path", "ControllerType", "ControllerNumber", "ControllerLocation",
                                             "Size")} for d in desc["Disks"]]}

    def disk_changes(self, p: dict) -> Any:
        d = self._disk(p["Path"])
        invalid = ScriptFailure(f"GetVirtualDiskChanges returned 32773 for {p['Path']} (reference {p['RctId']})")
        try:
            _, epoch, seq = p["RctId"].split(":")
        except ValueError:
            raise invalid from None
        if epoch != d.epoch or int(seq) > d.seq:
            raise invalid
        granules = sorted({g for s, off, n in d.writes if s > int(seq)
                           for g in range(off // RCT_GRANULE, (off + n - 1) // RCT_GRANULE + 1)})
        ranges: list[list[int]] = []
        for g in granules:
            if ranges and ranges[-1][0] + ranges[-1][1] == g * RCT_GRANULE:
                ranges[-1][1] += RCT_GRANULE
            else:
                ranges.append([g * RCT_GRANULE, RCT_GRANULE])
        for r in ranges:
            r[1] = min(r[1], d.size - r[0])
        return {"Ranges": ranges}

    def convert(self, p: dict) -> Any:
        vm = self._vm(p["VmId"])
        cp = vm.checkpoints.pop(p["CheckpointId"], None)
        if cp is None:
            raise ScriptFailure(f"checkpoint {p['CheckpointId']} of VM {p['VmId']} not found")
        rid = f"Microsoft:{vm.id}:{uuid.uuid4()}"
        disks = [(path, rct) for path, rct in cp["rct"].items()]
        self.reference_points[rid] = {"vm": vm.id, "disks": disks}
        return {"ReferencePointId": rid, "Disks": [{"Path": path, "RctId": rct} for path, rct in disks]}

    def remove(self, p: dict) -> Any:
        vm = self._vm(p["VmId"])
        removed = []
        if p.get("CheckpointId") and vm.checkpoints.pop(p["CheckpointId"], None) is not None:
            removed.append(p["CheckpointId"])
        if p.get("ReferencePointId") and self.reference_points.pop(p["ReferencePointId"], None) is not None:
            removed.append(p["ReferencePointId"])
        return {"Removed": removed}

    def test_target(self, p: dict) -> Any:
        taken = any(v.name.lower() == p["Name"].lower() for v in self.vms.values())
        local = self.local(p["Directory"])
        return {"NameTaken": taken, "DirectoryExists": os.path.isdir(local),
                "FreeBytes": shutil.disk_usage(self.share_dir).free}

    def new_vm(self, p: dict) -> Any:
        if any(v.name.lower() == p["Name"].lower() for v in self.vms.values()):
            raise ScriptFailure(f"a VM named {p['Name']} already exists")
        disks = []
        for path in p["DiskPaths"]:
            local = self.local(path)
            info = subprocess.run(["qemu-img", "info", "--output=json", local], capture_output=True, text=True)
            if info.returncode != 0 or json.loads(info.stdout).get("format") != "vhdx":
                raise ScriptFailure(f"Failed to add device 'Virtual Hard Disk': '{path}' is not a virtual disk")
            disks.append(Disk(path, local, json.loads(info.stdout)["virtual-size"]))
        switches = [s if p.get("Connect") else "" for s in p.get("Switches") or []]
        vm = Vm(p["Name"], str(uuid.uuid4()), disks, generation=p["Generation"], cpus=p["ProcessorCount"],
                memory=p["MemoryStartupBytes"], switches=switches, state="Running" if p.get("Start") else "Off")
        self.vms[vm.id] = vm
        return {"Id": vm.id, "Name": vm.name, "State": vm.state}
