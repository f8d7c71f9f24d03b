"""``plugin: winsystemstate``: a Windows host's system state, taken by Windows Server Backup itself (``wbadmin
start systemstatebackup``, VSS with every writer of the system state: Active Directory, registry, boot files,
SYSVOL, COM+, certificate services) to a share, driven over WinRM (no agent on the host). The backup folder
(``WindowsImageBackup\\<host>\\…``, the layout wbadmin reads back) is stored file by file in the vault — content-
defined chunks, so tomorrow's backup stores only what changed — and removed from the share once the snapshot is
published. Restore: the same tree put back on a share and ``wbadmin start systemstaterecovery`` (docs/restore.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from orchestrator.plugin.base import CaptureContext, SourceConfig, SourcePlugin
from orchestrator.plugin.errors import DobaasError
from orchestrator.plugin.export import ExportPart, HowToRead, Items, labelled_parts
from orchestrator.plugin.smb import BackupShareFields, LazySmbFile
from orchestrator.plugin.streams import ByteStream, Capture, Stream
from orchestrator.plugin.windows.channel import WinRmChannel
from orchestrator.plugin.windows.host import WindowsHostFields
from orchestrator.plugin.windows.scripts import Script

log = logging.getLogger(__name__)
BACKUP = Script.load("plugins.winsystemstate", "Start-DobaasSystemStateBackup.ps1")
HOW = HowToRead(
    fr="Sauvegarde de l'état du système Windows (WindowsImageBackup, format de Sauvegarde Windows Server) : copier "
       "le dossier WindowsImageBackup à la racine d'un partage, puis sur le serveur : wbadmin get versions "
       "-backupTarget:\\\\serveur\\partage et wbadmin start systemstaterecovery -version:<version> "
       "-backupTarget:\\\\serveur\\partage (contrôleur de domaine : en mode DSRM).",
    en="Windows system state backup (WindowsImageBackup, Windows Server Backup's format): copy the "
       "WindowsImageBackup folder to the root of a share, then on the server: wbadmin get versions "
       "-backupTarget:\\\\server\\share and wbadmin start systemstaterecovery -version:<version> "
       "-backupTarget:\\\\server\\share (domain controller: in DSRM).")


class WinSystemStateConfig(WindowsHostFields, BackupShareFields, SourceConfig):
    pass


class WinSystemStatePlugin(SourcePlugin):
    name = "winsystemstate"
    Config = WinSystemStateConfig

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return labelled_parts(items, tree_format, image_format, "Windows Server Backup (system state)", HOW)

    @contextmanager
    def capture(self, cfg: WinSystemStateConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        access = cfg.access()
        files = cfg.share_files(cfg.user, access.password, f"source {cfg.name}")
        folder = f"dobaas-systemstate-{ctx.lineage or 'run'}"
        url = f"{cfg.share}/{folder}"
        try:
            files.remove_tree(url)  # a run killed earlier left its folder: nothing of it was published
            files.makedirs(url)
            result = WinRmChannel(access).run(BACKUP, {"Target": f"{cfg.share_path}\\{folder}"})
            written = files.walk(url)
            if not any(rel.lower().startswith("windowsimagebackup/") for rel, _ in written):
                raise DobaasError(f"{cfg.host}: wbadmin reported success but wrote no WindowsImageBackup folder in "
                                  f"{cfg.share_path}\\{folder}")
            streams: list[Stream] = [ByteStream(rel, LazySmbFile(files, f"{url}/{rel}")) for rel, _ in written]
            meta = {"computer": result.get("Computer"), "version": result.get("Version"), "files": len(written),
                    "bytes": sum(n for _, n in written), "access": cfg.access_names(), **cfg.share_names()}
            yield Capture(streams, None, "application-consistent (VSS: Windows Server Backup system state)",
                          [], meta)
        finally:  # published or not, the share keeps nothing: the vault has it, or the run failed
            try:
                files.remove_tree(url)
            except OSError as e:
                log.warning("%s: the backup folder %s could not be removed: %s", cfg.name, url, e)
            files.close()
