"""``plugin: kvm``: whole KVM/QEMU virtual machines through libvirt, one snapshot per domain.

Running domains: pull-mode libvirt backup jobs with checkpoints; the first capture reads the allocated areas of
every disk, later ones read only the extents QEMU's dirty bitmap marks. Shut-off domains: qemu-nbd on the
images, with the bitmap of the previous checkpoint when there is one. The domain XML is kept with the snapshot
so a technician can restore the VM as a new domain (`dobaas restore vm`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from pydantic import Field

from orchestrator.plugin.base import CaptureContext, MachineRestoreOptions, SourceConfig, SourcePlugin
from orchestrator.plugin.errors import DobaasError, UsageError
from orchestrator.plugin.export import ExportPart, Items
from orchestrator.plugin.streams import Capture, ImageStream
from plugins.kvm import checkpoints, export, restore, workdir
from plugins.kvm.connection import connect, is_remote, libvirt_module, lookup, match_domains
from plugins.kvm.domxml import Disk, disks
from plugins.kvm.live import LiveJob
from plugins.kvm.nbd_image import NbdImage
from plugins.kvm.offline import OfflineExport, image_bitmaps

log = logging.getLogger(__name__)


class KvmConfig(SourceConfig):
    uri: str = "qemu:///system"
    domains: list[str] = Field(min_length=1)  # names or glob patterns
    exclude_disks: list[str] = Field(default_factory=list)  # "vdb" (every domain) or "web01:vdb"
    quiesce: bool = True  # freeze guest filesystems through the guest agent when it answers
    work_dir: str = "/var/lib/dobaas/kvm"  # NBD sockets and scratch files (guest writes during a backup)
    nbd_host: str | None = None  # serve NBD on TCP at this address (needed for remote libvirt URIs)
    nbd_port: int = Field(default=10809, ge=1, le=65535)


class KvmPlugin(SourcePlugin):
    name = "kvm"
    Config = KvmConfig
    native_image_format = "qcow2"

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return export.export_parts(meta, items, tree_format, image_format)

    def machine_staging_dir(self, options: MachineRestoreOptions) -> str | None:
        """The restored disks stay where the new domain uses them: --target-dir or libvirt's default pool."""
        return restore.target_dir(options)

    def check_machine_restore(self, meta: dict, options: MachineRestoreOptions) -> None:
        restore.check(meta, options)

    def restore_machine(self, meta: dict, disk_files: dict[str, str], options: MachineRestoreOptions) -> dict:
        return restore.make_domain(meta, disk_files, options)

    def units(self, cfg: KvmConfig) -> list[str]:
        return match_domains(connect(cfg.uri), cfg.domains, cfg.uri)

    def discover(self, cfg: KvmConfig) -> list[str]:
        return self.units(cfg)

    @contextmanager
    def capture(self, cfg: KvmConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        libvirt = libvirt_module()
        if not ctx.unit:
            raise UsageError("the kvm plugin captures one domain at a time")
        conn = connect(cfg.uri)
        dom = lookup(conn, ctx.unit, cfg.uri)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        uuid = dom.UUIDString()
        wanted, warnings = self._disks(cfg, ctx.unit, xml)
        base, base_disks = self._usable_checkpoint(dom, uuid, checkpoint, wanted, warnings)
        work = workdir.domain_dir(cfg.work_dir, uuid)
        meta: dict[str, Any] = {"domain": ctx.unit, "domain_uuid": uuid, "domain_xml": xml, "uri": cfg.uri,
                                "disks": {d.target: {"format": d.fmt, "path": d.path} for d in wanted}}
        if dom.isActive():
            yield from self._live(cfg, dom, wanted, work, ctx, base, base_disks, warnings, meta)
        else:
            yield from self._offline(cfg, dom, wanted, work, base, base_disks, checkpoint, warnings, meta)

    def _disks(self, cfg: KvmConfig, domain: str, xml: str) -> tuple[list[Disk], list[str]]:
        excluded = {e.split(":", 1)[-1] for e in cfg.exclude_disks if ":" not in e or e.split(":", 1)[0] == domain}
        wanted, warnings = [], []
        for d in disks(xml):
            if d.target in excluded:
                continue
            if d.readonly:
                warnings.append(f"disk {d.target} is read-only (shared media): not backed up")
                continue
            wanted.append(d)
        if not wanted:
            raise DobaasError(f"domain {domain} has no disk to back up (all excluded or read-only)")
        return wanted, warnings

    def _usable_checkpoint(self, dom: Any, uuid: str, token: dict | None, wanted: list[Disk],
                           warnings: list[str]) -> tuple[str | None, set[str]]:
        """The previous snapshot's checkpoint if it is still this domain's and libvirt still has it; else a
        full capture with a warning, never a wrong incremental."""
        if not token or not token.get("checkpoint"):
            return None, set()
        name = token["checkpoint"]
        if token.get("uuid") != uuid:
            warnings.append(f"the domain's UUID changed since checkpoint {name} (recreated?): full capture")
            return None, set()
        tracked = checkpoints.tracked_disks(dom, name)
        if tracked is None:
            warnings.append(f"checkpoint {name} is gone (domain moved to another host, or checkpoint metadata "
                            "removed): full capture")
            return None, set()
        for d in wanted:
            if d.fmt == "qcow2" and d.target not in tracked:
                warnings.append(f"disk {d.target} was added since checkpoint {name}: full capture of that disk")
        return name, tracked & set(token.get("disks", []))

    def _live(self, cfg: KvmConfig, dom: Any, wanted: list[Disk], work: str, ctx: CaptureContext, base: str | None,
              base_disks: set[str], warnings: list[str], meta: dict) -> Iterator[Capture]:
        tcp = (cfg.nbd_host, cfg.nbd_port) if cfg.nbd_host else None
        if tcp is None and is_remote(cfg.uri):
            raise UsageError(f"{cfg.uri} is a remote hypervisor: set nbd_host (an address of that host that this "
                             "machine can reach) so its disks are exported over TCP")
        job = LiveJob(dom, wanted, work, tcp)
        ok = False
        with ExitStack() as stack:
            try:
                job.begin(ctx.lineage, base, base_disks, cfg.quiesce)
                streams = []
                for d in wanted:
                    incremental = job.modes[d.target] == "incremental"
                    reader = NbdImage(job.export_uri(d.target), f"domain {ctx.unit} disk {d.target}",
                                      f"qemu:dirty-bitmap:backup-{d.target}" if incremental else None)
                    stack.callback(reader.close)
                    streams.append(ImageStream(d.target, reader, reader.changed_extents() if incremental else None))
                meta.update(state="running", capture_modes=job.modes)
                token = {"uuid": dom.UUIDString(), "checkpoint": job.checkpoint,
                         "disks": sorted(d.target for d in wanted if d.fmt == "qcow2")}
                yield Capture(streams, token, job.consistency, warnings + job.warnings, meta)
                ok = True
            finally:
                stack.close()
                job.end()
                if ok:  # the snapshot naming job.checkpoint is published: older checkpoints are not needed
                    older = [n for n in checkpoints.ours(dom, ctx.lineage) if n != job.checkpoint]
                    for w in checkpoints.delete(dom, older):
                        log.warning("domain %s: %s", ctx.unit, w)
                elif job.started:  # nothing published refers to it; the previous checkpoint stays usable
                    checkpoints.delete(dom, [job.checkpoint])

    def _offline(self, cfg: KvmConfig, dom: Any, wanted: list[Disk], work: str, base: str | None,
                 base_disks: set[str], token: dict | None, warnings: list[str], meta: dict) -> Iterator[Capture]:
        if is_remote(cfg.uri):
            raise DobaasError(f"domain {dom.name()} is shut off on the remote host {cfg.uri}: its images can only "
                              "be read on that host (start the domain, or run dobaas there)")
        modes = {}
        with ExitStack() as stack:
            streams = []
            for d in wanted:
                bitmap = None
                if base and d.target in base_disks and d.path:
                    if image_bitmaps(d.path).get(base):
                        bitmap = base
                    else:
                        warnings.append(f"disk {d.target}: bitmap {base} missing or not saved cleanly: full read")
                exp = OfflineExport(d, work, bitmap)
                exp.start()
                stack.callback(exp.stop)
                reader = NbdImage(exp.uri, f"domain {dom.name()} disk {d.target}", exp.context)
                stack.callback(reader.close)
                modes[d.target] = "incremental" if bitmap else "full"
                streams.append(ImageStream(d.target, reader, reader.changed_extents() if bitmap else None))
            meta.update(state="shut off", capture_modes=modes)
            # no checkpoint can be made while the domain is off: keep the previous one (its bitmap still records)
            keep = token if base and any(m == "incremental" for m in modes.values()) else None
            yield Capture(streams, keep, "shut off (disks at rest)", warnings, meta)
