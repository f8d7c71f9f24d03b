"""Changed-extent parsing and the block arithmetic the incremental path relies on."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.cbt.extents import blocks_touched, load_extents_file, parse_extents
from orchestrator.errors import BadInput

pytestmark = pytest.mark.cbt


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**5))), st.sampled_from([512, 4096, 65536]))
def test_blocks_touched_matches_brute_force(extents: list[tuple[int, int]], bs: int) -> None:
    expected = sorted({b for off, n in extents if n for b in range(off // bs, (off + n - 1) // bs + 1)})
    assert blocks_touched(extents, bs) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"a": 1}, "expected a JSON list"),
        ([[1]], "entry 0"),
        ([[0, 10], ["1", 2]], "entry 1"),
        ([[0, -1]], "negative"),
        ([[0, True]], "entry 0"),
        ([[90, 20]], "past the image size 100"),
    ],
)
def test_malformed_extents_are_named(raw: object, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_extents(raw, "extents file x.json", size=100)


def test_extents_file_errors(tmp_path) -> None:
    p = tmp_path / "e.json"
    p.write_text("[[0, 10],\n [5, ]")
    with pytest.raises(BadInput, match=r"invalid JSON at line 2"):
        load_extents_file(str(p))
    with pytest.raises(BadInput, match="does not exist"):
        load_extents_file(str(tmp_path / "missing.json"))
    p.write_text(json.dumps([[0, 10], [20, 0]]))
    assert load_extents_file(str(p)) == [(0, 10)]
