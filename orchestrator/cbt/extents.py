"""Changed extents: byte ranges a hypervisor or the caller says were written since the last capture."""

from __future__ import annotations

import json
from collections.abc import Iterable

from orchestrator.errors import BadInput
from orchestrator.plugin.blocks import Extent


def parse_extents(raw: object, source: str, size: int | None = None) -> list[Extent]:
    """Validate a JSON value ``[[offset, length], …]``; ``source`` names the file in error messages."""
    if not isinstance(raw, list):
        raise BadInput(f"{source}: expected a JSON list of [offset, length] pairs")
    out: list[Extent] = []
    for i, e in enumerate(raw):
        if (
            not isinstance(e, list | tuple)
            or len(e) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in e)
        ):
            raise BadInput(f"{source}: entry {i} is {json.dumps(e)}, expected [offset, length] as two integers")
        off, length = e
        if off < 0 or length < 0:
            raise BadInput(f"{source}: entry {i} {json.dumps(e)} has a negative offset or length")
        if size is not None and off + length > size:
            raise BadInput(f"{source}: entry {i} {json.dumps(e)} ends at {off + length}, past the image size {size}")
        if length:
            out.append((off, length))
    return out


def load_extents_file(path: str, size: int | None = None) -> list[Extent]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise BadInput(f"extents file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"extents file {path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"extents file {path}: cannot be read ({e})") from None
    except RecursionError:
        raise BadInput(f"extents file {path}: nested too deeply; expected [[offset, length], …]") from None
    return parse_extents(raw, f"extents file {path}", size)


def blocks_touched(extents: Iterable[Extent], block_size: int) -> list[int]:
    """Sorted indices of every block that overlaps at least one extent."""
    runs = sorted((off // block_size, (off + length - 1) // block_size) for off, length in extents if length > 0)
    out: list[int] = []
    last = -1
    for first, end in runs:
        start = max(first, last + 1)
        if start <= end:
            out.extend(range(start, end + 1))
            last = end
    return out

