"""Restore a SharePoint snapshot: its files are put back in a folder of a share the SharePoint server reads,
then ``Restore-SPSite`` to a new URL (sites), or ``Restore-SPFarm … -RestoreMethod Overwrite`` of a component on
a recovery farm (farm; the source farm only with ``in_place`` on purpose). The folder is removed afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, BinaryIO

from orchestrator.plugin.errors import UsageError
from orchestrator.plugin.smb import restore_share
from orchestrator.plugin.windows.channel import WinRmChannel
from orchestrator.plugin.windows.host import restore_access
from plugins.sharepoint.plugin import script

WriteItem = Callable[[str, BinaryIO], int]


def restore(meta: dict, items: list[str], write_item: WriteItem, options: dict) -> dict:
    t0 = time.monotonic()
    acc = meta["access"]
    host = options.get("host") or acc["host"]
    if meta["mode"] == "farm" and host == acc["host"] and not options.get("in_place"):
        raise UsageError(f"{host} is the farm this snapshot was taken from: Restore-SPFarm overwrites; give --host "
                         "of a recovery farm's server, or --in-place on purpose")
    if meta["mode"] == "sites":
        if not options.get("site") or not options.get("as_url"):
            raise UsageError(f"give --site (one of: {', '.join(meta['sites'])}) and --as-url NEW_URL")
        if options["site"] not in meta["sites"]:
            raise UsageError(f"--site {options['site']}: this snapshot holds {', '.join(meta['sites'])}")
    elif not (options.get("item") or meta.get("top")):
        raise UsageError("give --item, the farm component to restore (e.g. 'Farm\\...\\WSS_Content')")
    access = restore_access(acc, options, f"SharePoint server {host}")
    files, share, share_path = restore_share(meta, options, access.user, access.password)
    folder = f"dobaas-restore-{int(time.time())}"
    url, unc = f"{share}/{folder}", f"{share_path}\\{folder}"
    try:
        files.makedirs(url)
        wanted = [meta["sites"][options["site"]]] if meta["mode"] == "sites" else items
        for item in wanted:
            rel = item.split("/", 1)[1] if meta["mode"] == "sites" else item
            if "/" in rel:
                files.makedirs(f"{url}/{rel.rsplit('/', 1)[0]}")
            with files.open_write(f"{url}/{rel}") as out:
                write_item(item, out)
        channel = WinRmChannel(access)
        if meta["mode"] == "sites":
            name = meta["sites"][options["site"]].split("/", 1)[1]
            res: Any = channel.run(script("Restore-DobaasSpSite.ps1"), {"Identity": options["as_url"],
                                                                       "Path": f"{unc}\\{name}"})
            restored = res.get("Url")
        else:
            res = channel.run(script("Restore-DobaasSpFarm.ps1"), {"Directory": unc, "BackupId": meta["backup_id"],
                                                                  "Item": options.get("item") or meta["top"]})
            restored = res.get("Top")
    finally:
        files.remove_tree(url)
        files.close()
    return {"database": options.get("site") or meta.get("top"), "restored_as": restored, "server": host,
            "until": meta.get("method", "site backup"), "seconds": round(time.monotonic() - t0, 3),
            "verified": "SharePoint reported no error", "sharepoint": res}

