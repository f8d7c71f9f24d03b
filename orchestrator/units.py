"""Sizes as people write them ('64KiB', '20MiB/s', '1.5G', '500GiB', '4096') and as people read them."""

from __future__ import annotations

import re

from orchestrator.errors import BadInput

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*(?:/s)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "mi": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40,
          "ti": 2**40}


def parse_size(text: str, what: str) -> int:
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").lower() if m else ""
    if not m or unit not in _UNITS:
        raise BadInput(f"{what}: cannot read size {text!r} (examples: 4096, 64KiB, 20MiB/s, 500GiB)")
    return int(float(m.group(1)) * _UNITS[unit])


BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
#: the same units as French readers write them (octet, kibioctet, …)
FRENCH_UNITS = ("o", "Kio", "Mio", "Gio", "Tio")


def human_bytes(n: float, units: tuple[str, ...] = BINARY_UNITS) -> str:
    """'512 B', '1.5 MiB': one decimal above bytes, binary multiples up to the last unit given."""
    for unit in units:
        if abs(n) < 1024 or unit == units[-1]:
            return f"{n:.0f} {unit}" if unit == units[0] else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} {units[0]}"
