"""Back up a raw image file or block device, full or from a list of changed extents."""

from __future__ import annotations

import logging
import time

from orchestrator.backup.session import DEFAULT_LOCK_WAIT, BackupSession
from orchestrator.cbt.image import capture_image
from orchestrator.cbt.pipeline import Progress
from orchestrator.cbt.reader import FileBlockReader, ThrottledReader
from orchestrator.plugin.blocks import BlockReader, Extent
from orchestrator.vault.repository import Vault

log = logging.getLogger(__name__)


def backup_image(
    vault: Vault,
    reader: BlockReader,
    name: str,
    extents: list[Extent] | None = None,
    item_name: str = "image",
    block_size: int | None = None,
    workers: int = 2,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    progress: Progress | None = None,
    meta: dict | None = None,
) -> dict:
    """Capture one image as snapshot ``name``; return the figures a script or a person wants to see."""
    t0 = time.monotonic()
    bs = block_size or vault.config.block_size
    with BackupSession(vault, name, lock_wait) as s:
        cap = capture_image(s.writer, reader, item_name, bs, s.parent_item(item_name), extents, workers, progress)
        s.warnings.extend(cap.warnings)
        for warning in cap.warnings:
            log.warning("%s: %s", name, warning)
        extra = {"bytes_read": cap.stats.bytes_read, "zero_blocks": cap.stats.zero_blocks, "mode": cap.mode}
        snap = s.commit([cap.item], meta, extra)
        w = s.writer.stats
    return {
        "id": snap.id,
        "name": name,
        "time": snap.time,
        "parent": snap.parent,
        "mode": cap.mode,
        "size": reader.size,
        "bytes_read": cap.stats.bytes_read,
        "bytes_stored": w.bytes_written,
        "bytes_new_raw": w.raw_bytes_new,
        "chunks_new": w.chunks_new,
        "chunks_reused": w.chunks_reused,
        "zero_blocks": cap.stats.zero_blocks,
        "seconds": round(time.monotonic() - t0, 3),
        "warnings": s.warnings,
    }


def backup_image_file(vault: Vault, path: str, name: str, read_rate: float | None = None, **kw: object) -> dict:
    reader: BlockReader = FileBlockReader(path)
    if read_rate:
        reader = ThrottledReader(reader, read_rate)
    try:
        return backup_image(vault, reader, name, **kw)  # type: ignore[arg-type]
    finally:
        reader.close()
