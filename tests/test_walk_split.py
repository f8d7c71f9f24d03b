"""The walk of a large tree split between two processes (``orchestrator.plugin.localtree.child``): the items are
those of a walk by one process, in the same order, whatever changed since the parent listing — files changed,
added and removed on both sides of the split, and a directory of the second half removed or replaced by a file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orchestrator.plugin.localtree import child
from orchestrator.plugin.localtree.walk import LocalTree, entry_signature

pytestmark = pytest.mark.files


def _tree(root: Path) -> None:
    for d in ("a", "b", "c", "d", "e"):
        for sub in ("x", "y"):
            (root / d / sub).mkdir(parents=True)
            for k in range(30):
                (root / d / sub / f"f{k:02}.txt").write_text(f"{d}/{sub}/{k}\n")
        (root / f"{d}-file.txt").write_text(d)  # sorts after the directory's own entries: a-file after a/...


def _parent(tree: LocalTree) -> tuple[list[str], list]:
    paths, sigs = [], []
    for _k, e in child.walk_items(tree, [], []):
        paths.append(e["p"])
        sigs.append(entry_signature(e))
    return paths, sigs


def _flat(items: list) -> list:
    """Runs of unchanged entries spelled out entry by entry (a split walk cuts runs at its directories)."""
    out: list = []
    for first, second in items:
        if isinstance(second, dict):
            out.append((first, {k: v for k, v in second.items() if k not in ("at", "ct")}))
        else:
            out += [("same", k) for k in range(first, second)]
    return out


@pytest.mark.parametrize("second_half", ["kept", "removed", "replaced by a file"])
def test_a_split_walk_gives_what_one_process_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   second_half: str) -> None:
    root = tmp_path / "root"
    _tree(root)
    tree = LocalTree(str(root))
    paths, sigs = _parent(tree)
    monkeypatch.setattr(child, "SPLIT_MIN", 1)
    dirs = child.split_point(paths)
    assert dirs and dirs[-1] == "e" and "a" not in dirs, dirs
    (root / "a" / "x" / "f03.txt").write_text("changed, and longer\n")  # first half
    (root / "a" / "y" / "new.txt").write_text("new\n")
    (root / dirs[0] / "x" / "f07.txt").unlink()  # second half
    (root / dirs[0] / "y" / "f08.txt").write_text("changed, and longer too\n")
    (root / "e" / "x" / "new-dir").mkdir()
    (root / "e" / "x" / "new-dir" / "n.txt").write_text("n\n")
    if second_half == "removed":
        shutil.rmtree(root / dirs[-1])
    elif second_half == "replaced by a file":
        shutil.rmtree(root / dirs[-1])
        (root / dirs[-1]).write_text("a file now\n")
    os.sync()
    expected = list(child.walk_items(tree, paths, sigs))
    part = child._Part(tree, paths, sigs, dirs, {p: k for k, p in enumerate(paths)})
    try:
        got = list(child.walk_items(tree, paths, sigs, set(dirs), part=part))
    finally:
        part.kill()
    assert _flat(got) == _flat(expected)
    assert any(isinstance(e, dict) and e["p"].startswith(f"{dirs[0]}/") for _k, e in got)


def test_small_and_flat_trees_are_walked_by_one_process() -> None:
    assert child.split_point([""] + [f"f{k}" for k in range(50_000)]) == []  # flat: no directory to give away
    assert child.split_point(["", "d"] + [f"d/f{k}" for k in range(100)]) == []  # under SPLIT_MIN
    # one directory holds nearly everything: the split is looked for inside it
    deep = ["", "top"] + [f"top/{d}" if k == 0 else f"top/{d}/f{k}" for d in "abcd" for k in range(8_000)]
    assert child.split_point(deep) == ["top/c", "top/d"]


def _main_items(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: bytes) -> list:
    """Run the walker's ``main`` in this process on ``request``; its items, checked to end with ("end",)."""
    import io
    import marshal
    import types

    from orchestrator.plugin.localtree.delta import FRAME

    out = tmp_path / "frames"
    with open(out, "w+b") as f:
        monkeypatch.setattr(child.sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(request)))
        monkeypatch.setattr(child.sys, "stdout", types.SimpleNamespace(fileno=f.fileno))
        assert child.main() == 0
        f.seek(0)
        frames = []
        while head := f.read(FRAME.size):
            frames.append(marshal.loads(f.read(FRAME.unpack(head)[0])))
    assert frames[-1] == ("end",), frames[-1]
    return [item for frame in frames[:-1] for item in frame]


def test_the_walker_walks_alone_where_it_cannot_fork_a_helper(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import marshal

    root = tmp_path / "root"
    _tree(root)
    tree = LocalTree(str(root))
    paths, sigs = _parent(tree)
    (root / "e" / "y" / "f01.txt").write_text("changed, and longer\n")
    monkeypatch.setattr(child, "SPLIT_MIN", 1)
    request = marshal.dumps((str(root), [], False, paths, sigs))
    split = _main_items(monkeypatch, tmp_path, request)

    def no_memfd(_name: str) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(child.os, "memfd_create", no_memfd)
    alone = _main_items(monkeypatch, tmp_path, request)
    assert _flat(split) == _flat(alone)
    assert any(isinstance(e, dict) and e["p"] == "e/y/f01.txt" for _k, e in alone)
