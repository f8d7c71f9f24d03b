"""``plugin: hyperv``: Hyper-V virtual machines, driven over WinRM from this machine (no agent on the host).

Per VM: a production checkpoint (VSS in the guest); its disks read as VHDX files over SMB (the first time
whole — unallocated blocks cost nothing —, afterwards only the ranges Resilient Change Tracking reports changed
since the reference point stored with the previous snapshot); once every byte is stored the checkpoint becomes
an RCT reference point, and after the snapshot is published the previous reference point of this chain is
removed. A reference that is no longer valid (VM moved, disk replaced, RCT reset) means a full read and a
warning, never a wrong incremental. The VM's configuration is stored with the snapshot for restores."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import Field, field_validator

from orchestrator.plugin.base import CaptureContext, MachineRestoreOptions, SourceConfig, SourcePlugin
from orchestrator.plugin.blocks import Extent
from orchestrator.plugin.errors import DobaasError, NotFound, UsageError
from orchestrator.plugin.export import ExportPart, Items
from orchestrator.plugin.secret import read_secret
from orchestrator.plugin.smb import SmbFiles, host_to_url
from orchestrator.plugin.streams import Capture, ImageStream
from orchestrator.plugin.windows.channel import RemoteScriptError, WinRmChannel
from orchestrator.plugin.windows.host import WindowsHostFields
from orchestrator.plugin.windows.psjson import as_list
from orchestrator.plugin.windows.scripts import Script
from plugins.hyperv import export
from plugins.hyperv.vhdx import VhdxReader

log = logging.getLogger(__name__)
PACKAGE = "plugins.hyperv"


def script(name: str) -> Script:
    return Script.load(PACKAGE, name)


class HypervConfig(WindowsHostFields, SourceConfig):
    vms: list[str] = Field(min_length=1)
    #: host directory -> SMB share holding it, e.g. {"D:\\VMs": "smb://hv1/VMs"}
    storage: dict[str, str] = Field(min_length=1)
    #: credentials for the shares when they differ from the WinRM ones
    storage_user: str | None = None
    storage_password_env: str | None = None
    storage_password_file: str | None = None
    #: application: a production checkpoint or a failure; crash: crash-consistent (with a warning) when the
    #: guest cannot quiesce
    consistency: Literal["application", "crash"] = "application"
    exclude_disks: list[str] = Field(default_factory=list)

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: dict[str, str]) -> dict[str, str]:
        for host_dir, url in v.items():
            if not url.startswith("smb://"):
                raise ValueError(f"storage {host_dir!r}: {url!r} is not an smb:// URL")
        return v

    def access_names(self) -> dict:
        """How to reach the host again at restore time: names of secrets, never secrets."""
        return {**super().access_names(), "storage_user": self.storage_user,
                "storage_password_env": self.storage_password_env,
                "storage_password_file": self.storage_password_file}

    def files(self) -> SmbFiles:
        user = self.storage_user or self.user
        password = read_secret(self.storage_password_env, self.storage_password_file, f"source {self.name}",
                               "storage_password") if (self.storage_password_env or self.storage_password_file) \
            else self.password()
        return SmbFiles(user, password or "")


def disk_key(d: dict) -> str:
    """A disk's name in the snapshot: its controller slot, e.g. ``scsi0:1`` or ``ide0:0``."""
    return f"{str(d['ControllerType']).lower()}{d['ControllerNumber']}:{d['ControllerLocation']}"


class HypervPlugin(SourcePlugin):
    name = "hyperv"
    Config = HypervConfig
    native_image_format = "vhdx"

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return export.export_parts(meta, items, tree_format, image_format)

    def _channel(self, cfg: HypervConfig) -> WinRmChannel:
        return WinRmChannel(cfg.access())

    def _vms(self, cfg: HypervConfig, channel: WinRmChannel | None = None) -> list[dict]:
        vms = as_list((channel or self._channel(cfg)).run(script("Get-DobaasVm.ps1"), idempotent=True))
        out, missing = [], []
        for pattern in cfg.vms:
            matched = [v for v in vms if fnmatch.fnmatchcase(v["Name"].lower(), pattern.lower())]
            if not matched and not any(c in pattern for c in "*?["):
                missing.append(pattern)
            out += [v for v in matched if v not in out]
        if missing:
            raise NotFound(f"{cfg.host}: no VM named {', '.join(missing)} (there: "
                           f"{', '.join(sorted(v['Name'] for v in vms)) or 'none'})")
        return out

    def units(self, cfg: HypervConfig) -> list[str]:
        return [v["Name"] for v in self._vms(cfg)]

    def discover(self, cfg: HypervConfig) -> list[str]:
        return self.units(cfg)

    @contextmanager
    def capture(self, cfg: HypervConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        if not ctx.unit:
            raise UsageError("the hyperv plugin captures one VM at a time")
        channel = self._channel(cfg)
        vm = next((v for v in self._vms(cfg, channel) if v["Name"] == ctx.unit), None)
        if vm is None:
            raise NotFound(f"{cfg.host}: VM {ctx.unit} is gone")
        files = cfg.files()
        cp = channel.run(script("New-DobaasCheckpoint.ps1"), {"VmId": vm["Id"], "Lineage": ctx.lineage,
                                                               "AllowCrashConsistent": cfg.consistency == "crash"})
        warnings = [f"a checkpoint left by an interrupted backup was removed: {n}" for n in as_list(cp["RemovedStale"])]
        if cp["Consistency"] != "application":
            warnings.append(f"{vm['Name']}: the guest could not quiesce (VSS): crash-consistent checkpoint")
        readers: list[VhdxReader] = []
        state: dict[str, Any] = {"converted": None}
        try:
            streams, more = self._streams(cfg, channel, files, vm, cp, checkpoint, readers)
            warnings += more

            def finish() -> dict:
                rp = channel.run(script("Convert-DobaasCheckpoint.ps1"), {"VmId": vm["Id"],
                                                                          "CheckpointId": cp["CheckpointId"]})
                state["converted"] = rp["ReferencePointId"]
                keys = {d["Path"].lower(): disk_key(d) for d in as_list(cp["Disks"])}
                return {"vm_id": vm["Id"], "reference_point": rp["ReferencePointId"],
                        "disks": {keys.get(d["Path"].lower(), d["Path"]): {"path": d["Path"], "rct": d["RctId"]}
                                  for d in as_list(rp["Disks"])}}

            consistency = ("application-consistent (production checkpoint)" if cp["Consistency"] == "application"
                           else "crash-consistent")
            meta = {"vm": vm, "host": cfg.host, "storage": cfg.storage, "access": cfg.access_names(), "disks": {
                disk_key(d): {"path": d["Path"], "size": d["Size"]} for d in as_list(cp["Disks"])}}
            yield Capture(streams, consistency=consistency, warnings=warnings, meta=meta, finish=finish)
        except BaseException:
            if state["converted"] is None:
                self._remove(channel, vm["Id"], checkpoint_id=cp["CheckpointId"])
            raise
        finally:
            for r in readers:
                r.close()
            files.close()
        old = (checkpoint or {}).get("reference_point")
        if old and old != state["converted"] and (checkpoint or {}).get("vm_id") == vm["Id"]:
            self._remove(channel, vm["Id"], reference_point=old)

    def _streams(self, cfg: HypervConfig, channel: WinRmChannel, files: SmbFiles, vm: dict, cp: dict,
                 checkpoint: dict | None, readers: list[VhdxReader]) -> tuple[list[ImageStream], list[str]]:
        streams, warnings = [], []
        previous = (checkpoint or {}).get("disks", {}) if (checkpoint or {}).get("vm_id") == vm["Id"] else {}
        if checkpoint and not previous:
            warnings.append(f"{vm['Name']}: the previous snapshot is of another VM instance (same name, new Id): "
                            "full read")
        for d in as_list(cp["Disks"]):
            key = disk_key(d)
            if key in cfg.exclude_disks:
                warnings.append(f"{vm['Name']}: disk {key} excluded by the policy")
                continue
            reader = VhdxReader(d["Path"], lambda p: files.open_read(host_to_url(p, cfg.storage)))
            readers.append(reader)
            extents: list[Extent] | None = None
            prev = previous.get(key)
            if prev:
                try:
                    changes = channel.run(script("Get-DobaasDiskChanges.ps1"), {
                        "Path": prev["path"], "RctId": prev["rct"], "Size": reader.size}, idempotent=True)
                    extents = [(int(o), int(n)) for o, n in as_list(changes["Ranges"])]
                except RemoteScriptError as e:
                    warnings.append(f"{vm['Name']}: disk {key}: change tracking cannot answer since the last backup "
                                    f"({e.message}): full read")
            elif checkpoint:
                warnings.append(f"{vm['Name']}: disk {key} is new since the last backup: full read")
            streams.append(ImageStream(key, reader, extents))
        return streams, warnings

    def _remove(self, channel: WinRmChannel, vm_id: str, checkpoint_id: str | None = None,
                reference_point: str | None = None) -> None:
        params: dict[str, Any] = {"VmId": vm_id, "CheckpointId": checkpoint_id, "ReferencePointId": reference_point}
        try:
            channel.run(script("Remove-DobaasCheckpoint.ps1"), params)
        except DobaasError as e:  # the next backup removes what is left (checkpoints by name)
            log.warning("%s: could not remove %s: %s", channel.access.host, checkpoint_id or reference_point, e)

    # ---- restore ------------------------------------------------------------------------------------------
    def check_machine_restore(self, meta: dict, options: MachineRestoreOptions) -> None:
        from plugins.hyperv.restore import check

        check(meta, options)

    def restore_machine(self, meta: dict, disk_files: dict[str, str], options: MachineRestoreOptions) -> dict:
        from plugins.hyperv.restore import make_vm

        return make_vm(meta, disk_files, options)
