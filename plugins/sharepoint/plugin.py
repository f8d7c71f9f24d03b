"""``plugin: sharepoint``: SharePoint backed up by SharePoint itself, driven over the Windows channel.

- ``mode: farm``: ``Backup-SPFarm -Directory <share> -BackupMethod Full|Differential`` (a full every
  ``full_every`` runs). The backup folder (``spbrtoc.xml`` + ``spbrNNNN\\``) is read over SMB into the vault;
  a differential snapshot also carries its full, so it restores alone. On the share, a differential's folder
  is removed once its snapshot is published; the last full's folder and ``spbrtoc.xml`` stay, because the
  next differential is taken against them (a full starts from an empty folder).
- ``mode: sites``: ``Backup-SPSite`` of each listed site collection to a file, stored, then removed.

Restores: ``Restore-SPSite`` to a new URL (never over a live site), or ``Restore-SPFarm`` of a component onto a
recovery farm (the source farm only on purpose)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import Field, model_validator

from orchestrator.plugin.base import CaptureContext, SourceConfig, SourcePlugin
from orchestrator.plugin.errors import DobaasError
from orchestrator.plugin.export import ExportPart, HowToRead, Items, labelled_parts
from orchestrator.plugin.smb import BackupShareFields, LazySmbFile, SmbFiles
from orchestrator.plugin.streams import ByteStream, Capture, CarriedItem, Stream
from orchestrator.plugin.windows.channel import WinRmChannel
from orchestrator.plugin.windows.host import WindowsHostFields
from orchestrator.plugin.windows.scripts import Script

log = logging.getLogger(__name__)
TOC = "spbrtoc.xml"
HOW = HowToRead(
    fr="Sauvegarde SharePoint (Backup-SPFarm : spbrtoc.xml et dossiers spbrNNNN ; Backup-SPSite : fichiers .bak) : "
       "copier le dossier sur un partage, puis Restore-SPFarm -Directory \\\\serveur\\partage -BackupId <SPId de "
       "spbrtoc.xml> -Item <composant> -RestoreMethod Overwrite, ou Restore-SPSite -Identity <URL> -Path <fichier>.",
    en="SharePoint backup (Backup-SPFarm: spbrtoc.xml and spbrNNNN folders; Backup-SPSite: .bak files): copy the "
       "folder to a share, then Restore-SPFarm -Directory \\\\server\\share -BackupId <SPId from spbrtoc.xml> -Item "
       "<component> -RestoreMethod Overwrite, or Restore-SPSite -Identity <URL> -Path <file>.")


def script(name: str) -> Script:
    return Script.load("plugins.sharepoint", name)


class SharePointConfig(WindowsHostFields, BackupShareFields, SourceConfig):
    mode: Literal["farm", "sites"] = "farm"
    sites: list[str] = Field(default_factory=list)  # site collection URLs (mode: sites)
    item: str | None = None  # mode farm: one component ("Farm\\Microsoft SharePoint Foundation Web Application\\…")
    full_every: int = Field(7, ge=1)

    @model_validator(mode="after")
    def _sites(self) -> SharePointConfig:
        if self.mode == "sites" and not self.sites:
            raise ValueError("mode: sites needs the site collections' URLs in sites")
        for url in self.sites:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"sites: {url!r} is not a site collection URL (https://host/sites/name)")
        return self


def site_file(url: str) -> str:
    """A site collection URL as a file name: https://intranet/sites/rh -> intranet_sites_rh.bak."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", url.split("://", 1)[-1]).strip("_") + ".bak"


class SharePointPlugin(SourcePlugin):
    name = "sharepoint"
    Config = SharePointConfig

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        return labelled_parts(items, tree_format, image_format, "SharePoint backup", HOW)

    def restore_database(self, meta: dict, items: list[str], write_item: Any, options: dict) -> dict:
        from plugins.sharepoint.restore import restore

        return restore(meta, items, write_item, options)

    @contextmanager
    def capture(self, cfg: SharePointConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        access = cfg.access()
        files = cfg.share_files(cfg.user, access.password, f"source {cfg.name}")
        folder = f"dobaas-sharepoint-{ctx.lineage or 'run'}"
        url, unc = f"{cfg.share}/{folder}", f"{cfg.share_path}\\{folder}"
        channel = WinRmChannel(access)
        try:
            if cfg.mode == "sites":
                yield from self._sites(cfg, channel, files, url, unc)
            else:
                yield from self._farm(cfg, channel, files, url, unc, checkpoint)
        finally:
            files.close()

    def _sites(self, cfg: SharePointConfig, channel: WinRmChannel, files: SmbFiles, url: str,
               unc: str) -> Iterator[Capture]:
        files.remove_tree(url)  # a killed run's files: never published
        files.makedirs(url)
        try:
            sites = {}
            for site in cfg.sites:
                name = site_file(site)
                channel.run(script("Backup-DobaasSpSite.ps1"), {"Identity": site, "Path": f"{unc}\\{name}"})
                sites[site] = f"sites/{name}"
            streams: list[Stream] = [ByteStream(item, LazySmbFile(files, f"{url}/{item.split('/', 1)[1]}"))
                                     for item in sites.values()]
            yield Capture(streams, None, "application-consistent (Backup-SPSite: site read-only while copied)", [],
                          {"mode": "sites", "sites": sites, "access": cfg.access_names(), **cfg.share_names()})
        finally:
            files.remove_tree(url)

    def _farm(self, cfg: SharePointConfig, channel: WinRmChannel, files: SmbFiles, url: str, unc: str,
              checkpoint: dict | None) -> Iterator[Capture]:
        warnings: list[str] = []
        token = checkpoint if checkpoint and checkpoint.get("mode") == "farm" else None
        method = "Full"
        if token and token.get("runs_since_full", 0) + 1 < cfg.full_every:
            if files.exists(f"{url}/{token['full_dir']}/spbackup.xml") and files.exists(f"{url}/{TOC}"):
                method = "Differential"
            else:
                warnings.append(f"the last full backup's folder {token['full_dir']} is gone from {cfg.share_path}: "
                                "this run is a full backup")
        if method == "Full":
            files.remove_tree(url)  # a full starts from an empty folder: nothing older is needed there
            files.makedirs(url)
        before = {rel.split("/", 1)[0] for rel, _ in files.walk(url) if "/" in rel}
        new_dir = ""
        published = False
        try:
            res = channel.run(script("Backup-DobaasSpFarm.ps1"),
                              {"Directory": unc, "BackupMethod": method, "Item": cfg.item})
            new_dir = str(res["Directory"]).rstrip("\\").rsplit("\\", 1)[-1]
            if not re.fullmatch(r"spbr\d{4}", new_dir) or new_dir in before:
                raise DobaasError(f"Backup-SPFarm reported the folder {res['Directory']!r}, not a new spbrNNNN "
                                  f"folder of {unc}")
            mine = [(rel, n) for rel, n in files.walk(url) if rel.split("/", 1)[0] == new_dir]
            base = token if method == "Differential" else None
            chain = [f"{new_dir}/{rel.split('/', 1)[1]}" for rel, _ in mine]
            streams: list[Stream] = [CarriedItem(i, i) for i in (base["chain"] if base else [])]
            streams += [ByteStream(item, LazySmbFile(files, f"{url}/{item}")) for item in chain]
            streams.append(ByteStream(TOC, LazySmbFile(files, f"{url}/{TOC}")))
            full_chain = [*(base["chain"] if base else []), *chain]
            new_token = {"mode": "farm", "full_id": base["full_id"] if base else res["Id"],
                         "full_dir": base["full_dir"] if base else new_dir,
                         "chain": base["chain"] if base else chain,
                         "runs_since_full": base["runs_since_full"] + 1 if base else 0}
            meta = {"mode": "farm", "method": method, "backup_id": res["Id"], "directory": new_dir,
                    "full_id": new_token["full_id"], "top": res.get("Top"), "sharepoint_warnings": res.get("Warnings"),
                    "items": full_chain, "access": cfg.access_names(), **cfg.share_names()}
            yield Capture(streams, new_token, f"SharePoint {method.lower()} backup (Backup-SPFarm)", warnings, meta)
            published = True
        finally:
            if method == "Full" and not published:
                files.remove_tree(url)  # nothing of a failed full is a base for anything
            elif method == "Differential" and new_dir:
                files.remove_tree(f"{url}/{new_dir}")  # stored (or failed): the full stays as the next base
