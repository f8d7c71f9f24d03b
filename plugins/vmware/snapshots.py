"""The backup snapshot of a VM: named after the backup lineage so that a later run recognises one an earlier,
crashed run left behind (and removes it), quiesced when VMware Tools can, removed always."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from plugins.vmware.connection import Session
from plugins.vmware.inventory import VmInfo
from plugins.vmware.tasks import TaskFailed, fault_text, wait

log = logging.getLogger(__name__)

PREFIX = "dobaas-backup-"


def snapshot_name(lineage: str) -> str:
    return f"{PREFIX}{lineage}"


@dataclass
class BackupSnapshot:
    ref: Any
    quiesced: bool
    warnings: list[str] = field(default_factory=list)


def take(session: Session, vm: VmInfo, lineage: str, quiesce: bool) -> BackupSnapshot:
    """A snapshot without memory; quiesced (VMware Tools, VSS in Windows guests) when asked, and when that
    fails a crash-consistent one with a warning rather than no backup."""
    desc = f"Do'BaaS backup in progress (host {socket.gethostname()}, pid {os.getpid()}, {time.ctime()}); " \
           "removed when the backup ends"
    warnings = []
    if quiesce:
        if vm.power_state != "poweredOn":
            quiesce = False  # nothing runs in the guest: the disks are at rest
        else:
            try:
                ref = wait(session, vm.ref.CreateSnapshot_Task(snapshot_name(lineage), desc, False, True),
                           f"VM {vm.name}: quiesced snapshot")
                return BackupSnapshot(ref, True)
            except TaskFailed as e:
                warnings.append(f"quiescing the guest failed ({fault_text(e.fault)}): crash-consistent snapshot "
                                "instead (are VMware Tools running in the guest?)")
    ref = wait(session, vm.ref.CreateSnapshot_Task(snapshot_name(lineage), desc, False, False),
               f"VM {vm.name}: snapshot")
    return BackupSnapshot(ref, False, warnings)


def remove(session: Session, vm_name: str, snap: Any) -> str | None:
    """Remove (and consolidate) a snapshot; returns a warning instead of raising, so that a failed removal
    never hides the backup's own error; the next run retries as an orphan."""
    try:
        wait(session, snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True),
             f"VM {vm_name}: removing the backup snapshot")
        return None
    except Exception as e:
        msg = f"the backup snapshot could not be removed ({e}); the next run removes it"
        log.error("VM %s: %s", vm_name, msg)
        return msg


def remove_orphans(session: Session, vm: VmInfo, lineage: str) -> list[str]:
    """Backup snapshots of this lineage left by a run that died (power loss, kill -9): they grow the delta
    files on the datastore every minute they stay. Returns the warnings to report."""
    warnings = []
    for tree in vm.snapshots:
        if tree.name == snapshot_name(lineage):
            warnings.append(f"removed a backup snapshot left by an interrupted run (taken {tree.createTime})")
            w = remove(session, vm.name, tree.snapshot)
            if w:
                warnings[-1] = w
        elif tree.name.startswith(PREFIX):
            warnings.append(f"the VM holds another backup snapshot, {tree.name} (taken {tree.createTime}): "
                            "another policy or vault backs this VM up, or one of its runs died")
    return warnings
