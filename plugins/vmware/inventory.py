"""Inventory through PropertyCollector retrievals: one round trip per object type for the whole inventory, only
the properties asked for, and unset properties simply absent (never read one by one: thousands of VMs stay
fast, and some servers fault on reading an unset property)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plugin.errors import NotFound
from plugins.vmware.connection import Session, pyvmomi

PAGE = 1000  # objects per RetrievePropertiesEx page


def retrieve(session: Session, obj_type: Any, props: list[str], root: Any = None) -> list[tuple[Any, dict]]:
    """Every object of ``obj_type`` under ``root`` (default: the whole inventory) with the given properties."""
    _vim, vmodl = pyvmomi()
    content = session.content
    view = content.viewManager.CreateContainerView(root or content.rootFolder, [obj_type], True)
    try:
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[
                pc.TraversalSpec(name="view", path="view", skip=False, type=type(view))])],
            propSet=[pc.PropertySpec(type=obj_type, pathSet=props)])
        out: list[tuple[Any, dict]] = []
        res = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions(maxObjects=PAGE))
        while res:
            out.extend((o.obj, {p.name: p.val for p in o.propSet}) for o in res.objects)
            res = content.propertyCollector.ContinueRetrievePropertiesEx(res.token) if res.token else None
        return out
    finally:
        view.DestroyView()


def properties(session: Session, obj: Any, props: list[str]) -> dict:
    """Some properties of one object (absent keys: unset)."""
    _vim, vmodl = pyvmomi()
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj, skip=False)],
                         propSet=[pc.PropertySpec(type=type(obj), pathSet=props)])
    res = session.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    if not res or not res.objects:
        raise NotFound(f"{obj} no longer exists")
    return {p.name: p.val for p in res.objects[0].propSet}


@dataclass
class VmInfo:
    ref: Any
    name: str
    path: str  # inventory path: Datacenter/vm/Folder/Name
    datacenter: str
    instance_uuid: str
    cbt: bool
    power_state: str
    template: bool
    snapshots: list[Any] = field(default_factory=list)  # flat list of VirtualMachineSnapshotTree
    resource_pool: str = ""  # managed object ids, so a restore can default to where the VM ran
    esx_host: str = ""


VM_PROPS = ["name", "parent", "config.instanceUuid", "config.changeTrackingEnabled", "config.template",
            "runtime.powerState", "snapshot", "resourcePool", "runtime.host"]


def _flatten(trees: list[Any]) -> list[Any]:
    out = []
    for t in trees or []:
        out.append(t)
        out.extend(_flatten(t.childSnapshotList))
    return out


def list_vms(session: Session) -> list[VmInfo]:
    """Every VM with its inventory path, in two retrievals of parents (folders, datacenters) and one of VMs."""
    vim, _vmodl = pyvmomi()
    parents: dict[str, tuple[str, Any, bool]] = {}  # moref id -> (name, parent, is_datacenter)
    for kind, is_dc in ((vim.Folder, False), (vim.Datacenter, True)):
        for ref, p in retrieve(session, kind, ["name", "parent"]):
            parents[ref._moId] = (p.get("name", ""), p.get("parent"), is_dc)
    vms = []
    for ref, p in retrieve(session, vim.VirtualMachine, VM_PROPS):
        parts, dc, cur = [p.get("name", "")], "", p.get("parent")
        while cur is not None and cur._moId in parents:
            name, cur_parent, is_dc = parents[cur._moId]
            if cur_parent is None:  # the root folder is not part of inventory paths
                break
            parts.append(name)
            if is_dc and not dc:
                dc = name
            cur = cur_parent
        snap = p.get("snapshot")
        vms.append(VmInfo(ref, p.get("name", ""), "/".join(reversed(parts)), dc, p.get("config.instanceUuid", ""),
                          bool(p.get("config.changeTrackingEnabled")), str(p.get("runtime.powerState", "")),
                          bool(p.get("config.template")), _flatten(snap.rootSnapshotList) if snap else [],
                          getattr(p.get("resourcePool"), "_moId", ""), getattr(p.get("runtime.host"), "_moId", "")))
    return sorted(vms, key=lambda v: v.path)


INVENTORY_TTL = 600.0  # a run lists the VMs once, then backs each up: the list is reused, each VM refreshed


def cached_vms(session: Session, fresh: bool = False) -> list[VmInfo]:
    """The VM list, made fresh when a run starts (``fresh``: matching the policy's patterns) and reused by the
    backups of that run (a policy matching 2,000 VMs must not list the inventory 2,000 times); what changes
    during a run (snapshots, power state, CBT) is read again per VM by ``refresh``."""
    import time

    cached = getattr(session, "_inventory", None)
    if fresh or cached is None or time.monotonic() - cached[0] > INVENTORY_TTL:
        cached = (time.monotonic(), list_vms(session))
        session._inventory = cached  # type: ignore[attr-defined]
    return cached[1]


def refresh(session: Session, vm: VmInfo) -> VmInfo:
    """The VM's current snapshot tree, CBT flag and power state."""
    p = properties(session, vm.ref, ["config.changeTrackingEnabled", "runtime.powerState", "snapshot",
                                     "config.instanceUuid"])
    snap = p.get("snapshot")
    vm.cbt = bool(p.get("config.changeTrackingEnabled"))
    vm.power_state = str(p.get("runtime.powerState", ""))
    vm.snapshots = _flatten(snap.rootSnapshotList) if snap else []
    vm.instance_uuid = p.get("config.instanceUuid", vm.instance_uuid)
    return vm


def match_vms(vms: list[VmInfo], patterns: list[str], host: str) -> list[VmInfo]:
    """VMs whose name or inventory path matches a pattern (names, paths, globs); templates are skipped. A plain
    name or path that matches nothing is an error: a VM renamed or deleted must not silently drop out."""
    out: dict[str, VmInfo] = {}
    for pat in patterns:
        pat = pat.strip("/")
        hits = [v for v in vms if not v.template and (fnmatch.fnmatchcase(v.name, pat)
                                                      or fnmatch.fnmatchcase(v.path, pat))]
        if not hits and not any(ch in pat for ch in "*?["):
            known = ", ".join(v.name for v in vms[:20]) or "none"
            raise NotFound(f"virtual machine {pat!r} not found on {host} (VMs there: {known})")
        for v in hits:
            out[v.instance_uuid or v.path] = v
    if not out:
        raise NotFound(f"no virtual machine on {host} matches {', '.join(patterns)}")
    names = [v.name for v in out.values()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise NotFound(f"several VMs are named {', '.join(dupes)} on {host}: list them by inventory path "
                       "(Datacenter/vm/Folder/Name) so each has its own backup chain")
    return sorted(out.values(), key=lambda v: v.name)
