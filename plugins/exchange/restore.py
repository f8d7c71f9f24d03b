"""Restore an Exchange snapshot, never over the live database: the EDB and its logs are written to a folder of a
share the Exchange server reads, then (unless ``files_only``) the server copies them to an empty local folder,
replays the logs (``eseutil /r``), checks the header says Clean Shutdown, creates and mounts a recovery database,
and for each mailbox asked starts ``New-MailboxRestoreRequest`` into the live mailbox (a "Restored …" folder)."""

from __future__ import annotations

import ntpath
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from orchestrator.plugin.errors import UsageError
from orchestrator.plugin.smb import restore_share
from orchestrator.plugin.windows.channel import WinRmChannel
from orchestrator.plugin.windows.host import restore_access
from plugins.exchange.plugin import script

WriteItem = Callable[[str, BinaryIO], int]


def restore(meta: dict, items: list[str], write_item: WriteItem, options: dict) -> dict:
    t0 = time.monotonic()
    acc = meta["access"]
    files_only = bool(options.get("files_only"))
    target = options.get("target_folder")
    if not files_only:
        if not target or not ntpath.isabs(target) or not ntpath.splitdrive(target)[0]:
            raise UsageError("give --target-folder, an empty folder on the Exchange server (R:\\Recovery\\DB01), "
                             "or --files-only")
        for live in (ntpath.dirname(meta.get("edb_path") or ""), meta.get("log_folder") or ""):
            a, b = ntpath.normcase(ntpath.normpath(target)), ntpath.normcase(ntpath.normpath(live)) if live else ""
            if b and (a == b or a.startswith(b + "\\") or b.startswith(a + "\\")):
                raise UsageError(f"--target-folder {target} overlaps {live}, a folder of the live database "
                                 f"{meta['database']}: restores never go there")
    recovery = options.get("recovery_name") or f"RDB-{meta['database']}-{time.strftime('%Y%m%d%H%M')}"
    if recovery.lower() == meta["database"].lower():
        raise UsageError(f"--recovery-name {recovery} is the live database's name")
    access = restore_access(meta["access"], options, f"Exchange server {options.get('host') or acc['host']}")
    files, share, share_path = restore_share(meta, options, access.user, access.password)
    folder = f"dobaas-restore-{meta['database']}-{time.strftime('%Y%m%d%H%M%S')}"
    url, unc = f"{share}/{folder}", f"{share_path}\\{folder}"
    written = 0
    keep = files_only
    try:
        files.makedirs(f"{url}/logs")
        for item in items:
            with files.open_write(f"{url}/{item}") as out:
                written += write_item(item, out)
        if files_only:
            return {"database": meta["database"], "restored_as": unc, "server": None, "until": meta.get("method"),
                    "seconds": round(time.monotonic() - t0, 3), "bytes": written,
                    "verified": f"{len(items)} file(s) written and checked against the snapshot; no recovery run"}
        channel = WinRmChannel(access)
        res: Any = channel.run(script("Restore-DobaasExchangeDatabase.ps1"), {
            "Source": unc, "TargetFolder": target, "EdbName": meta["edb"], "LogFilePrefix": meta["log_prefix"],
            "RecoveryName": recovery})
        requests: Any = []
        if options.get("mailboxes"):
            requests = channel.run(script("New-DobaasMailboxRestore.ps1"), {
                "RecoveryName": recovery, "Mailboxes": list(options["mailboxes"])}).get("Requests") or []
    except BaseException:
        keep = False
        raise
    finally:
        if not keep:
            files.remove_tree(url)
        files.close()
    requests = [requests] if isinstance(requests, dict) else requests
    return {"database": meta["database"], "restored_as": res.get("RecoveryDatabase"), "server": res.get("Server"),
            "until": meta.get("method"), "seconds": round(time.monotonic() - t0, 3), "bytes": written,
            "edb_path": res.get("EdbFilePath"), "requests": requests,
            "verified": f"soft recovery replayed the logs, header {res.get('State')}, recovery database mounted"}

