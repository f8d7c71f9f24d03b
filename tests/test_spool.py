"""The spool that keeps a first backup's catalog rows on disk: rows come back in order, whatever the disk does."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from orchestrator import spool
from orchestrator.spool import Spool

ROWS = [{"p": f"dir/f{k}\udcff", "t": "f", "s": 2**70 + k} for k in range(2_500)]  # non-UTF-8 names, big ints


def test_rows_come_back_in_order_from_disk_and_memory() -> None:
    s = Spool(part=1000)
    s.extend(ROWS)
    assert len(s._rows) == 500 and len(s) == 2_500  # two parts on disk
    assert list(s) == ROWS
    s.append(("late", 1))  # appends go on after a read
    assert list(s) == [*ROWS, ("late", 1)]
    s.close()
    assert list(s) == []


def test_no_room_on_disk_keeps_the_rows_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (ENOSPC) in the middle, or a cache directory that cannot be made: nothing is lost."""
    real = os.pwrite
    calls = []

    def full_after_one_part(fd: int, data: bytes, offset: int) -> int:
        calls.append(offset)
        if len(calls) > 1:
            real(fd, bytes(data)[:100], offset)  # a part cut short
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(spool.os, "pwrite", full_after_one_part)
    s = Spool(part=1000)
    s.extend(ROWS)
    assert list(s) == ROWS and len(s) == 2_500
    monkeypatch.setattr(spool.os, "pwrite", real)

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("DOBAAS_CACHE_DIR", str(blocker / "cache"))
    s = Spool(part=1000)
    s.extend(ROWS)
    assert list(s) == ROWS
