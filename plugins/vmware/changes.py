"""Changed-block tracking questions: which areas of a disk changed between a stored changeId and the backup
snapshot (``QueryChangedDiskAreas``), or, with ``*``, which areas were ever written. Answers cover part of the
disk at a time; we ask again from where each answer ends until the whole capacity is covered."""

from __future__ import annotations

from typing import Any

from orchestrator.plugin.blocks import Extent
from orchestrator.plugin.errors import DobaasError
from plugins.vmware.connection import pyvmomi


class ChangeIdRejected(DobaasError):
    """The host cannot answer from this changeId (CBT was reset, the disk moved): read the disk in full."""


def changed_areas(vm: Any, snapshot: Any, device_key: int, capacity: int, change_id: str) -> list[Extent]:
    vim, vmodl = pyvmomi()
    out: list[Extent] = []
    offset = 0
    while offset < capacity:
        try:
            info = vm.QueryChangedDiskAreas(snapshot=snapshot, deviceKey=device_key, startOffset=offset,
                                            changeId=change_id)
        except (vim.fault.VimFault, vmodl.MethodFault) as e:
            raise ChangeIdRejected(f"the host cannot list changes since changeId {change_id} "
                                   f"({getattr(e, 'msg', None) or type(e).__name__})") from None
        for a in info.changedArea or []:
            start, end = max(a.start, 0), min(a.start + a.length, capacity)
            if end <= start:
                continue
            if out and out[-1][0] + out[-1][1] >= start:
                last = out[-1]
                out[-1] = (last[0], max(last[0] + last[1], end) - last[0])
            else:
                out.append((start, end - start))
        nxt = info.startOffset + info.length
        if info.length <= 0 or nxt <= offset:
            raise DobaasError(f"QueryChangedDiskAreas answered no progress at offset {offset} (length "
                              f"{info.length}): refusing to guess which areas changed")
        offset = nxt
    return out
