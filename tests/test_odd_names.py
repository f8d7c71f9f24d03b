"""Names that are not UTF-8 anywhere in a listing: at every position of a listing piece, in link targets, in an
incremental, and restored byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.backup.runner import run_policy
from orchestrator.restore.files import restore_files
from orchestrator.vault.tree import encode_entry

pytestmark = pytest.mark.files


def _names(n: int) -> list[bytes]:
    """2,000 names, one in three Latin-1, of varying length, so non-UTF-8 names fall at the start, middle and
    end of listing pieces (pieces end by a hash of the path once they hold 4 KiB)."""
    out = []
    for i in range(n):
        stem = b"f%05d-" % i + b"x" * (i % 37)
        out.append(stem + (b"-caf\xe9-\xff\xfe.txt" if i % 3 == 0 else b"-plain.txt"))
    return out


def _tree_bytes(root: bytes) -> dict[bytes, bytes]:
    got = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            got[rel] = os.readlink(p) if os.path.islink(p) else Path(os.fsdecode(p)).read_bytes()
    return got


def test_two_thousand_names_with_latin1_at_every_piece_position(setup) -> None:  # type: ignore[no-untyped-def]
    src, vault, catalog, policy, tmp = setup
    big = os.path.join(os.fsencode(src), b"big-\xe9")
    os.mkdir(big)
    for i, name in enumerate(_names(2000)):
        with open(os.path.join(big, name), "wb") as f:
            f.write(b"%d" % i)
    os.symlink(b"target-\xe9\xff", os.path.join(big, b"link-\xe0"))
    first = run_policy(policy, vault, catalog).sources[0]
    assert first.status == "ok", first.errors
    assert len(vault.read_snapshot(first.snapshot).items[0]["map"]) > 10  # many pieces, so many positions
    with open(os.path.join(big, b"f00003-xxx-caf\xe9-\xff\xfe.txt"), "ab") as f:
        f.write(b" changed")
    second = run_policy(policy, vault, catalog).sources[0]
    assert second.status == "ok" and second.files_read == 1, second.errors
    restored = tmp / "restored"
    restore_files(vault, vault.read_snapshot(second.snapshot), [os.fsdecode(big)], str(restored), "never", False,
                  None)
    want = _tree_bytes(big)
    assert _tree_bytes(os.path.join(os.fsencode(restored), b"big-\xe9")) == want
    assert len(want) == 2001


def test_an_unexpected_exception_fails_one_source_only(setup, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A bug in a plugin (here: any exception that is not ours) fails that source with a job row and a
    traceback in the log; the other sources still run and are saved."""
    import logging

    from orchestrator.backup.runner import run_policy
    from orchestrator.policy.model import load_policy
    from plugins.files.plugin import FilesPlugin
    from tests.filetrees import write_policy

    src, vault, catalog, _policy, tmp = setup
    policy = load_policy(str(write_policy(tmp, Path(vault.backend.location), [
        {"name": "buggy", "plugin": "files", "paths": [str(src / "docs")]},
        {"name": "fine", "plugin": "files", "paths": [str(src)]}])))
    real = FilesPlugin.capture

    def capture(self, cfg, checkpoint, ctx):  # type: ignore[no-untyped-def]
        if cfg.name == "buggy":
            raise KeyError("a plugin bug")
        return real(self, cfg, checkpoint, ctx)

    monkeypatch.setattr(FilesPlugin, "capture", capture)
    with caplog.at_level(logging.ERROR):
        report = run_policy(policy, vault, catalog)
    by = {s.source: s for s in report.sources}
    assert by["buggy"].status == "failed" and by["buggy"].errors == [
        "internal error: KeyError: 'a plugin bug' (traceback in the log)"]
    assert by["fine"].status == "ok" and by["fine"].snapshot
    assert report.exit_code == 1
    assert any(r.exc_info for r in caplog.records), "the traceback goes to the log"
    jobs = {j["source"]: j for j in catalog.jobs(policy="nightly")}
    assert jobs["buggy"]["status"] == "failed" and jobs["fine"]["status"] == "ok"


_values = st.recursive(
    # surrogates as os.fsdecode leaves them for bytes that are not UTF-8 (U+DC80..U+DCFF)
    st.text(st.characters() | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF))
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers() | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=3), _values, max_size=8))
def test_listing_lines_are_what_the_json_module_writes(entry: dict) -> None:
    """Listing lines come from orjson now: byte for byte json's compact UTF-8 form (so lines of snapshots taken
    before stay identical and their pieces deduplicate), and names with surrogates (bytes that are not UTF-8)
    still read back to the same text."""
    line = encode_entry(entry)
    text = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
    try:
        assert line == text.encode() + b"\n"
    except UnicodeEncodeError:  # surrogates: escaped, the line stays UTF-8
        assert line == json.dumps(entry, separators=(",", ":")).encode() + b"\n"
    assert json.loads(line) == entry
