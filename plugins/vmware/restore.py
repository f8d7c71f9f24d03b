"""A VMware snapshot made into a new VM: each disk (already written locally and checked against the snapshot by
the core) uploaded with a flat descriptor through the datastore interface and read back (SHA-256 compared),
then a VM created from the saved configuration on the chosen datastore, resource pool, host and folder, with new
identity and its NICs disconnected (the original may still run), and powered on if asked."""

from __future__ import annotations

import logging
import os
from typing import Any

from orchestrator.plugin.base import MachineRestoreOptions
from orchestrator.plugin.errors import DobaasError, NotFound, UsageError
from orchestrator.plugin.secret import read_secret
from plugins.vmware.connection import Session, connect, pyvmomi
from plugins.vmware.datastore import DatastoreHttp, parse_ds_path
from plugins.vmware.inventory import list_vms, properties, retrieve
from plugins.vmware.tasks import wait
from plugins.vmware.tls import TlsTrust

log = logging.getLogger(__name__)

IDE_KEYS = {0: 200, 1: 201}  # IDE controllers exist in every VM; they are never created


def open_session(meta: dict, options: MachineRestoreOptions) -> Session:
    tls = meta.get("tls") or {}
    host = options.get("uri") or meta["host"]
    user = options.get("user") or meta["user"]
    env = options.get("password_env") or meta.get("password_env")
    file = options.get("password_file") or (None if options.get("password_env") else meta.get("password_file"))
    password = read_secret(env, file, f"vCenter/ESXi {host}", "password")
    return connect(host, user, password, TlsTrust(tls.get("ca_file"), tls.get("thumbprint"),
                                                  bool(tls.get("insecure"))))


class Placement:
    """Where the new VM goes: datacenter, datastore, resource pool, host, folder (names or inventory paths)."""

    def __init__(self, session: Session, meta: dict, options: MachineRestoreOptions) -> None:
        vim, _ = pyvmomi()
        self.session = session
        cfg = meta["vm_config"]
        dcs = {str(p.get("name")): ref for ref, p in retrieve(session, vim.Datacenter, ["name"])}
        self.dc_name = options.get("datacenter") or meta.get("datacenter") or next(iter(dcs), "")
        if self.dc_name not in dcs:
            raise NotFound(f"datacenter {self.dc_name!r} not found (there: {', '.join(dcs) or 'none'})")
        self.dc = dcs[self.dc_name]
        first = cfg["disks"][0]["file"] if cfg["disks"] else ""
        self.ds_name = options.get("datastore") or (parse_ds_path(first)[0] if first else "")
        stores = {str(p.get("name")): (ref, p) for ref, p in retrieve(
            session, vim.Datastore, ["name", "summary.freeSpace", "summary.accessible"], self.dc)}
        if self.ds_name not in stores:
            raise NotFound(f"datastore {self.ds_name!r} not found in {self.dc_name} (there: {', '.join(stores)}); "
                           "choose one with --datastore")
        self.ds, ds_props = stores[self.ds_name]
        self.free = int(ds_props.get("summary.freeSpace") or 0)
        if not ds_props.get("summary.accessible", True):
            raise DobaasError(f"datastore {self.ds_name} is not accessible")
        self.host = self._pick(vim.HostSystem, options.get("esx_host"), "ESXi host", "--esx-host")
        self.pool = self._pick(vim.ResourcePool, options.get("pool"), "resource pool", "--pool")
        if self.pool is None and self.host is None:  # where the VM ran, when that pool still exists here
            was = (meta.get("placement") or {}).get("resource_pool")
            self.pool = next((ref for ref, _p in retrieve(session, vim.ResourcePool, ["name"], self.dc)
                              if was and ref._moId == was), None)
        if self.pool is None:
            owner = properties(session, self.host, ["parent"])["parent"] if self.host else None
            if owner is None:
                owner = retrieve(session, vim.ComputeResource, ["name"], self.dc)[0][0]
            self.pool = properties(session, owner, ["resourcePool"])["resourcePool"]
        folder = options.get("folder")
        self.folder = self._pick(vim.Folder, folder, "VM folder", "--folder") if folder else \
            properties(session, self.dc, ["vmFolder"])["vmFolder"]

    def _pick(self, kind: Any, wanted: str | None, what: str, opt: str) -> Any:
        if not wanted:
            return None
        found = [ref for ref, p in retrieve(self.session, kind, ["name"], self.dc) if p.get("name") == wanted]
        if len(found) != 1:
            raise NotFound(f"{what} {wanted!r} {'not found' if not found else 'is ambiguous'} in {self.dc_name} "
                           f"(give {opt} a unique name)")
        return found[0]


def _disk_paths(name: str, disk: str) -> tuple[str, str]:
    base = f"{name}/{name}_{disk.replace(':', '_')}"
    return f"{base}.vmdk", f"{base}-flat.vmdk"


def check(meta: dict, options: MachineRestoreOptions) -> None:
    if "vm_config" not in meta:
        raise UsageError("this snapshot has no saved VMware configuration")
    name = options["name"]
    session = open_session(meta, options)
    try:
        taken = [v.path for v in list_vms(session) if v.name == name]
        if taken:
            raise UsageError(f"a VM named {name!r} already exists ({taken[0]}); choose another --as")
        place = Placement(session, meta, options)
        need = sum(d["capacity"] for d in meta["vm_config"]["disks"])
        if need > place.free:
            raise DobaasError(f"datastore {place.ds_name} has {place.free >> 20} MiB free, the disks need "
                              f"{need >> 20} MiB; choose another --datastore")
        http_ = DatastoreHttp(session, place.dc_name)
        for d in meta["vm_config"]["disks"]:
            for path in _disk_paths(name, d["name"]):
                try:
                    http_.get_small(place.ds_name, path, 1)
                except NotFound:
                    continue
                raise UsageError(f"[{place.ds_name}] {path} already exists; choose another --as or --datastore")
        http_.close()
    finally:
        session.close()


def descriptor(flat_name: str, capacity: int, adapter: str) -> str:
    """A monolithic flat VMDK descriptor for an uploaded extent."""
    sectors = capacity // 512
    return (f'# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=fffffffe\nparentCID=ffffffff\n'
            f'createType="vmfs"\n\n# Extent description\nRW {sectors} VMFS "{flat_name}"\n\n'
            f'# The Disk Data Base\n#DDB\n\nddb.adapterType = "{adapter}"\nddb.virtualHWVersion = "13"\n'
            f'ddb.geometry.cylinders = "{max(1, sectors // (255 * 63))}"\nddb.geometry.heads = "255"\n'
            f'ddb.geometry.sectors = "63"\n')


def make_vm(meta: dict, raw_files: dict[str, str], options: MachineRestoreOptions) -> dict:
    vim, _ = pyvmomi()
    from pyVmomi import VmomiSupport

    cfg, name = meta["vm_config"], options["name"]
    session = open_session(meta, options)
    uploaded = False
    vm_ref = None
    place: Placement | None = None
    try:
        place = Placement(session, meta, options)
        http_ = DatastoreHttp(session, place.dc_name)
        ctrl_types = {c["key"]: c["type"] for c in cfg["controllers"]}
        files: dict[str, str] = {}
        for d in cfg["disks"]:
            raw = raw_files.get(d["name"])
            if raw is None:
                continue
            if d["capacity"] % 512:
                raise DobaasError(f"disk {d['name']}: capacity {d['capacity']} is not a multiple of 512 bytes")
            desc_path, flat_path = _disk_paths(name, d["name"])
            size = os.path.getsize(raw)
            uploaded = True
            bar = options.get("upload_progress")
            with open(raw, "rb") as f:
                sent = http_.upload(place.ds_name, flat_path, f, size, bar(f"upload {d['name']}", size) if bar
                                    else None)
            back, n = http_.sha256(place.ds_name, flat_path)
            if back != sent or n != size:
                raise DobaasError(f"disk {d['name']}: the datastore copy differs from what was uploaded "
                                  f"({n} of {size} bytes read back)")
            adapter = "ide" if "IDE" in ctrl_types.get(d["controller_key"], "") else "lsilogic"
            body = descriptor(flat_path.rsplit("/", 1)[1], d["capacity"], adapter).encode()
            http_.request("PUT", http_.url(place.ds_name, desc_path), f"uploading [{place.ds_name}] {desc_path}",
                          {"Content-Length": str(len(body))}, body, ok=(200, 201, 204)).read()
            files[d["name"]] = f"[{place.ds_name}] {desc_path}"
        http_.close()

        spec = vim.vm.ConfigSpec(name=name, guestId=cfg["guest_id"], numCPUs=cfg["num_cpu"],
                                 memoryMB=cfg["memory_mb"], annotation=cfg.get("annotation") or "",
                                 files=vim.vm.FileInfo(vmPathName=f"[{place.ds_name}] {name}/{name}.vmx"))
        if cfg.get("cores_per_socket"):
            spec.numCoresPerSocket = cfg["cores_per_socket"]
        if cfg.get("firmware"):
            spec.firmware = cfg["firmware"]
        if cfg.get("version"):
            spec.version = cfg["version"]
        changes, new_keys, warnings = [], {}, []
        for i, c in enumerate(cfg["controllers"]):
            if "IDE" in c["type"]:
                new_keys[c["key"]] = IDE_KEYS.get(c["bus_number"], 200)
                continue
            ctl = VmomiSupport.GetVmodlType(c["type"])(key=-(100 + i), busNumber=c["bus_number"])
            if hasattr(ctl, "sharedBus"):
                ctl.sharedBus = c.get("shared_bus") or "noSharing"
            new_keys[c["key"]] = ctl.key
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=ctl))
        for j, d in enumerate(cfg["disks"]):
            if d["name"] not in files:
                warnings.append(f"disk {d['name']} was not in the snapshot (excluded): not attached")
                continue
            backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=files[d["name"]], diskMode=d.get("mode") or "persistent", thinProvisioned=d.get("thin"))
            disk = vim.vm.device.VirtualDisk(key=-(200 + j), controllerKey=new_keys.get(d["controller_key"]),
                                             unitNumber=d["unit_number"], capacityInKB=d["capacity"] // 1024,
                                             backing=backing)
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=disk))
        for k, nic in enumerate(cfg["nics"]):
            net = nic.get("network")
            if not net:  # distributed port groups and opaque networks are not recreated
                warnings.append(f"NIC {k + 1} ({nic['type']} on a distributed port group or opaque network) not "
                                "recreated: connect it by hand")
                continue
            card = VmomiSupport.GetVmodlType(nic["type"])(
                key=-(300 + k), addressType="generated",
                backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=net),
                connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=False, connected=False,
                                                                    allowGuestControl=True))
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=card))
        spec.deviceChange = changes
        vm_ref = wait(session, place.folder.CreateVM_Task(config=spec, pool=place.pool, host=place.host),
                      f"creating VM {name}")
        state = "created (powered off)"
        if options.get("start"):
            wait(session, vm_ref.PowerOnVM_Task(), f"powering on VM {name}")
            power = str(properties(session, vm_ref, ["runtime.powerState"]).get("runtime.powerState"))
            if power != "poweredOn":
                raise DobaasError(f"VM {name} was created but is {power} after power-on")
            state = "powered on"
        for raw in raw_files.values():
            if os.path.exists(raw):
                os.unlink(raw)
        props = properties(session, vm_ref, ["config.instanceUuid", "config.uuid"])
        return {"vm": name, "domain": name, "moref": vm_ref._moId, "instance_uuid": props.get("config.instanceUuid"),
                "host": session.host, "datacenter": place.dc_name, "datastore": place.ds_name, "state": state,
                "disks": files, "nics": "disconnected (connect them once the restore is verified)",
                "warnings": warnings, "verified_upload": "every disk read back from the datastore, SHA-256 equal"}
    except BaseException:
        _clean(session, vm_ref, place if uploaded else None, name)
        raise
    finally:
        session.close()


def _clean(session: Session, vm_ref: Any, place: Placement | None, name: str) -> None:
    """Undo a failed restore: the half-made VM, then the uploaded files."""
    if vm_ref is not None:
        try:
            wait(session, vm_ref.Destroy_Task(), f"removing the half-restored VM {name}")
            return  # destroying the VM deletes its files
        except Exception as e:
            log.error("could not remove the half-restored VM %s: %s", name, e)
    if place is not None:
        try:
            fm = session.content.fileManager
            wait(session, fm.DeleteDatastoreFile_Task(name=f"[{place.ds_name}] {name}", datacenter=place.dc),
                 f"removing the uploaded files of {name}")
        except Exception as e:
            log.error("could not remove [%s] %s: %s", place.ds_name, name, e)
