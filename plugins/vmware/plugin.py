"""``plugin: vmware``: whole VMware VMs through vCenter or an ESXi host, one snapshot per VM.

Per VM: a (quiesced) vSphere snapshot; per disk, the areas changed since the changeId stored with the previous
backup (``QueryChangedDiskAreas``), or every allocated area on the first backup, read from the snapshot's disk
through the datastore HTTP interface; the snapshot is removed at the end whatever happened, and one left by a
crashed run is found and removed by the next. The VM's configuration is kept for `dobaas restore vm`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from pydantic import Field, field_validator, model_validator

from orchestrator.plugin.base import CaptureContext, MachineRestoreOptions, PasswordFields, SourceConfig, SourcePlugin
from orchestrator.plugin.errors import DobaasError, NotFound, UsageError
from orchestrator.plugin.export import ExportPart, Items
from orchestrator.plugin.streams import Capture, ImageStream
from plugins.vmware import export, restore, snapshots
from plugins.vmware.changes import ChangeIdRejected, changed_areas
from plugins.vmware.connection import Session, logout_all, pyvmomi, session
from plugins.vmware.datastore import DatastoreDisk, DatastoreHttp, flat_extent
from plugins.vmware.inventory import VmInfo, cached_vms, list_vms, match_vms, properties, refresh
from plugins.vmware.tasks import TaskFailed, wait
from plugins.vmware.tls import TlsTrust, normalize_thumbprint
from plugins.vmware.vmconfig import DiskInfo, disks, serialize, summarize

log = logging.getLogger(__name__)


class VmwareConfig(PasswordFields, SourceConfig):
    host: str  # vCenter or ESXi host, optionally host:port
    user: str
    vms: list[str] = Field(min_length=1)  # names, inventory paths (DC/vm/Folder/Name) or glob patterns
    quiesce: bool = True  # VMware Tools quiescing (VSS in Windows guests); crash-consistent with a warning if it fails
    enable_cbt: bool = True  # turn changed-block tracking on for VMs that lack it (else: full reads, reported)
    exclude_disks: list[str] = Field(default_factory=list)  # "scsi0:1" (every VM) or "web01:scsi0:1"
    ca_file: str | None = None  # PEM bundle of the CA that signed the host's certificate
    thumbprint: str | None = None  # or the host certificate's pinned SHA-256 (or SHA-1) fingerprint
    insecure: bool = False  # no certificate check at all: only when written explicitly

    @field_validator("thumbprint")
    @classmethod
    def _thumbprint(cls, v: str | None) -> str | None:
        return normalize_thumbprint(v) if v else None

    @model_validator(mode="after")
    def _trust(self) -> VmwareConfig:
        if self.insecure and (self.ca_file or self.thumbprint):
            raise ValueError("insecure: true contradicts ca_file/thumbprint; keep the verification, drop insecure")
        return self

    def trust(self) -> TlsTrust:
        return TlsTrust(self.ca_file, self.thumbprint, self.insecure)


def open_session(cfg: VmwareConfig) -> AbstractContextManager[Session]:
    return session(cfg.host, cfg.user, cfg.password(), cfg.trust())


def unit_name(vm_name: str) -> str:
    return vm_name.replace("/", "%2f")  # as vSphere itself escapes it: unit names become snapshot names


class VmwarePlugin(SourcePlugin):
    name = "vmware"
    Config = VmwareConfig
    native_image_format = "vmdk"

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return export.export_parts(meta, items, tree_format, image_format)

    def units(self, cfg: VmwareConfig) -> list[str]:
        with open_session(cfg) as s:
            return [unit_name(v.name) for v in match_vms(cached_vms(s, fresh=True), cfg.vms, cfg.host)]

    def discover(self, cfg: VmwareConfig) -> list[str]:
        return self.units(cfg)

    def end_run(self) -> None:
        """Log out of every vSphere session kept for the run's VMs (vCenter limits sessions per user)."""
        logout_all()

    def check_machine_restore(self, meta: dict, options: MachineRestoreOptions) -> None:
        restore.check(meta, options)

    def restore_machine(self, meta: dict, disk_files: dict[str, str], options: MachineRestoreOptions) -> dict:
        return restore.make_vm(meta, disk_files, options)

    @contextmanager
    def capture(self, cfg: VmwareConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        if not ctx.unit:
            raise UsageError("the vmware plugin captures one VM at a time")
        with open_session(cfg) as session:
            vm = self._find(session, cfg, ctx.unit)
            warnings = snapshots.remove_orphans(session, vm, ctx.lineage)
            cbt = self._ensure_cbt(session, cfg, vm, warnings)
            snap = snapshots.take(session, vm, ctx.lineage, cfg.quiesce)
            warnings += snap.warnings
            try:
                yield self._capture(session, cfg, vm, snap, cbt, checkpoint, warnings)
            finally:
                w = snapshots.remove(session, vm.name, snap.ref)
                if w:
                    log.error("VM %s: %s", vm.name, w)

    def _find(self, session: Session, cfg: VmwareConfig, unit: str) -> VmInfo:
        for fresh in (False, True):
            vms = list_vms(session) if fresh else cached_vms(session)
            for v in vms:
                if unit_name(v.name) == unit:
                    try:
                        return refresh(session, v)
                    except NotFound:
                        break  # deleted or re-registered since the list was made: list again
        raise DobaasError(f"virtual machine {unit!r} is no longer on {cfg.host}")

    def _ensure_cbt(self, session: Session, cfg: VmwareConfig, vm: VmInfo, warnings: list[str]) -> bool:
        if vm.cbt:
            return True
        if not cfg.enable_cbt:
            warnings.append("changed-block tracking is off for this VM (enable_cbt: false): every backup reads "
                            "the whole disks")
            return False
        vim, _ = pyvmomi()
        try:
            wait(session, vm.ref.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)),
                 f"VM {vm.name}: enabling changed-block tracking")
        except TaskFailed as e:
            warnings.append(f"{e}: every backup reads the whole disks until it is enabled")
            return False
        warnings.append("changed-block tracking was off: enabled now; this backup reads every allocated area")
        return True

    def _capture(self, session: Session, cfg: VmwareConfig, vm: VmInfo, snap: snapshots.BackupSnapshot, cbt: bool,
                 checkpoint: dict | None, warnings: list[str]) -> Capture:
        config = properties(session, snap.ref, ["config"])["config"]
        excluded = set()
        for e in cfg.exclude_disks:  # "scsi0:1" or "vm name:scsi0:1"
            parts = e.rsplit(":", 2)
            if len(parts) == 2 or parts[0] == vm.name:
                excluded.add(":".join(parts[-2:]))
        previous = self._previous(checkpoint, vm, warnings)
        http_ = DatastoreHttp(session, vm.datacenter)
        streams, modes, token_disks = [], {}, {}
        for d in disks(config):
            if d.name in excluded:
                continue
            if d.mode.startswith("independent"):
                warnings.append(f"disk {d.name} is {d.mode}: snapshots do not cover it, not backed up")
                continue
            if d.has_parent:
                raise DobaasError(f"VM {vm.name}: disk {d.name} ({d.file}) is a delta disk: the VM has snapshots of "
                                  "its own; delete or consolidate them (image reads need a flat base disk)")
            ds, flat = flat_extent(http_, d.file)
            extents, allocated, mode = self._plan(vm, snap, d, cbt, previous.get(d.name), warnings)
            reader = DatastoreDisk(http_, ds, flat, d.capacity, f"VM {vm.name} disk {d.name}", allocated)
            streams.append(ImageStream(d.name, reader, extents))
            modes[d.name] = mode
            if cbt and d.change_id:
                token_disks[d.name] = {"change_id": d.change_id, "key": d.key, "capacity": d.capacity}
            elif cbt:
                warnings.append(f"disk {d.name}: the snapshot carries no changeId (CBT not yet active): the next "
                                "backup reads it in full too")
        if not streams:
            raise DobaasError(f"VM {vm.name} has no disk to back up (all excluded or independent)")
        if vm.power_state != "poweredOn":
            consistency = "powered off (disks at rest)" if vm.power_state == "poweredOff" else vm.power_state
        elif snap.quiesced:
            consistency = "quiesced (VMware Tools: VSS in Windows guests, filesystem freeze in Linux guests)"
        else:
            consistency = "crash-consistent" + ("" if cfg.quiesce else " (quiesce: false)")
        meta: dict[str, Any] = {
            "vm": vm.name, "vm_path": vm.path, "datacenter": vm.datacenter, "instance_uuid": vm.instance_uuid,
            "power_state": vm.power_state, "host": cfg.host, "user": cfg.user,
            "placement": {"resource_pool": vm.resource_pool, "esx_host": vm.esx_host},
            "tls": {"ca_file": cfg.ca_file, "thumbprint": cfg.thumbprint, "insecure": cfg.insecure},
            "password_env": cfg.password_env, "password_file": cfg.password_file,
            "vm_config": summarize(config), "vm_config_xml": serialize(config), "capture_modes": modes}
        token = {"instance_uuid": vm.instance_uuid, "disks": token_disks} if token_disks else None
        return Capture(streams, token, consistency, warnings, meta)

    def _previous(self, checkpoint: dict | None, vm: VmInfo, warnings: list[str]) -> dict:
        if not checkpoint:
            return {}
        if checkpoint.get("instance_uuid") != vm.instance_uuid:
            warnings.append("the VM's instance UUID changed since the last backup (re-registered or recreated): "
                            "full read")
            return {}
        return checkpoint.get("disks") or {}

    def _plan(self, vm: VmInfo, snap: snapshots.BackupSnapshot, d: DiskInfo, cbt: bool, prev: dict | None,
              warnings: list[str]) -> tuple[list | None, list | None, str]:
        """(changed extents for an incremental, allocated extents for a full read, mode)."""
        if cbt and prev and prev.get("change_id"):
            if prev.get("key") != d.key or prev.get("capacity") != d.capacity:
                warnings.append(f"disk {d.name} was replaced or resized since the last backup: full read")
            else:
                try:
                    return changed_areas(vm.ref, snap.ref, d.key, d.capacity, prev["change_id"]), None, \
                        "incremental"
                except ChangeIdRejected as e:
                    warnings.append(f"disk {d.name}: {e} (CBT reset or storage migration?): full read")
        allocated = None
        if cbt and d.change_id:
            try:
                allocated = changed_areas(vm.ref, snap.ref, d.key, d.capacity, "*")
            except ChangeIdRejected as e:
                warnings.append(f"disk {d.name}: allocated areas unknown ({e}): reading the whole disk")
        return None, allocated, "full"
