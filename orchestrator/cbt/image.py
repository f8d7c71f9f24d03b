"""Block images: capture one image item (full or incremental from changed extents); restoring one is
``orchestrator.restore.image``.

Incremental forever: the new block map starts as a copy of the parent's, and only the blocks that overlap a
changed extent are read again. Without extents every block is read and only blocks the vault lacks are stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.cbt.extents import blocks_touched
from orchestrator.cbt.pipeline import CaptureStats, Progress, capture_blocks
from orchestrator.errors import IntegrityError
from orchestrator.plugin.blocks import BlockReader, Extent
from orchestrator.vault.crypto import ID_LEN, ZERO_ID
from orchestrator.vault.snapshot import Item, load_image_map, split_map
from orchestrator.vault.writer import BackupWriter

log = logging.getLogger(__name__)



def count_holes(bmap: bytearray) -> int:
    """Number of ZERO_ID entries (searching in C, then checking alignment: a match may straddle two ids)."""
    count, pos = 0, bmap.find(ZERO_ID)
    while pos >= 0:
        if pos % ID_LEN == 0:
            count += 1
            pos = bmap.find(ZERO_ID, pos + ID_LEN)
        else:
            pos = bmap.find(ZERO_ID, pos + ID_LEN - pos % ID_LEN)
    return count


@dataclass
class ImageCapture:
    item: Item
    stats: CaptureStats
    mode: str  # "full", "incremental" or "dedup-full"
    warnings: list[str] = field(default_factory=list)


def blocks_using(bmap: bytes | bytearray, ids: Iterable[bytes]) -> set[int]:
    """Block numbers whose map entry is one of ``ids`` (searching in C; a match must be aligned)."""
    out = set()
    for cid in ids:
        pos = bmap.find(cid)
        while pos >= 0:
            if pos % ID_LEN == 0:
                out.add(pos // ID_LEN)
            pos = bmap.find(cid, pos + 1)
    return out


def plan_blocks(
    size: int, block_size: int, parent: Item | None, parent_map: bytearray | None, extents: list[Extent] | None,
    damaged: Iterable[bytes] = (),
) -> tuple[bytearray, list[int] | range, str, list[str]]:
    """Decide which blocks to read, and the starting block map (parent's ids for the rest). Blocks whose
    parent chunk is recorded ``damaged`` are read again, which stores them afresh and repairs the vault."""
    nblocks = -(-size // block_size)
    warnings: list[str] = []
    if extents is not None and parent is None:
        warnings.append("no previous snapshot to apply changed extents to: reading the whole image")
    elif extents is not None and parent is not None and parent["block_size"] != block_size:
        warnings.append("previous snapshot used another block size: reading the whole image")
    elif extents is not None and parent is not None and parent_map is not None:
        pblocks = len(parent_map) // ID_LEN
        bmap = bytearray(parent_map[: nblocks * ID_LEN])
        bmap.extend(bytes(nblocks * ID_LEN - len(bmap)))
        dirty = {b for b in blocks_touched(extents, block_size) if b < nblocks}  # writes past a shrunk end vanish
        if parent["size"] != size:  # the old tail block and every new block must be read
            dirty.update(range(max(0, min(pblocks, nblocks) - 1), nblocks))
        heal = {b for b in blocks_using(bmap, damaged) if b < nblocks} - dirty
        if heal:
            warnings.append(f"{len(heal)} unchanged block(s) used data recorded as damaged in the vault: read again "
                            "to repair it")
            dirty |= heal
        return bmap, sorted(dirty), "incremental", warnings
    return bytearray(nblocks * ID_LEN), range(nblocks), ("dedup-full" if parent else "full"), warnings


def capture_image(
    writer: BackupWriter,
    reader: BlockReader,
    item_name: str,
    block_size: int,
    parent: Item | None = None,
    extents: list[Extent] | None = None,
    workers: int = 2,
    progress: Progress | None = None,
) -> ImageCapture:
    """Capture one block image into the vault; return the item entry for the snapshot manifest."""
    parent_map = None
    damaged: list[str] = []
    if parent is not None and extents is not None and parent["block_size"] == block_size:
        try:
            parent_map = load_image_map(parent, lambda cid: writer.vault.read_chunk(cid, f"item {item_name} map"))
        except IntegrityError as e:  # the previous block map is damaged: read everything (and store it afresh)
            damaged.append(f"{item_name}: the previous snapshot's block map is unreadable ({e}); the whole image "
                           "is read")
            log.warning("%s", damaged[-1])
            extents = None
    quarantined = writer.index.quarantined if parent_map is not None else {}
    bmap, blocks, mode, warnings = plan_blocks(reader.size, block_size, parent, parent_map, extents, quarantined)
    warnings = damaged + warnings
    if mode != "incremental":  # a full read need not read the holes of a sparse file: they are zeros
        ranges = getattr(reader, "data_ranges", lambda: None)()
        if ranges is not None:
            blocks = blocks_touched(ranges, block_size)
    stats = capture_blocks(reader, blocks, block_size, bmap, writer, workers, progress)
    stats.zero_blocks = count_holes(bmap)
    pieces = [writer.store_meta(p).hex() for p in split_map(bmap, ID_LEN)]
    item: Item = {
        "name": item_name,
        "type": "image",
        "size": reader.size,
        "block_size": block_size,
        "map": pieces,
        "capture": mode,
    }
    return ImageCapture(item, stats, mode, warnings)
