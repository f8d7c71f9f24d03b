"""What a new maintainer or a technician meets first: plain `pytest` works from the checkout, browsing finds a
policy's own catalog and says which catalog it searched, and every `make` target the docs name exists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli

pytestmark = pytest.mark.cli
ROOT = Path(__file__).resolve().parent.parent


def test_plain_pytest_collects_from_the_checkout() -> None:
    p = subprocess.run([str(Path(sys.executable).with_name("pytest")), "--collect-only", "-q",
                        "tests/test_extents.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ModuleNotFoundError" not in p.stdout + p.stderr, p.stdout + p.stderr


def test_every_make_target_the_docs_name_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    docs = [ROOT / "README.md", *ROOT.joinpath("docs").rglob("*.md")]
    named = {(d.name, t) for d in docs for t in re.findall(r"`make ([a-z][a-z-]*)", d.read_text())}
    assert named and not {(d, t) for d, t in named if t not in targets}


def test_ls_and_find_use_a_policys_catalog_and_name_the_catalog_searched(tmp_path: Path, cli: Cli,
                                                                        cli_vault: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "budget.xlsx").write_text("numbers")
    own = tmp_path / "client-catalog.db"
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\ncatalog: {own}\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{src}']}}\n")
    other = Cli({"DOBAAS_CATALOG": ""})  # no catalog from the environment: the policy's is used
    sid = json.loads(other("run", str(pol), "--json").stdout)["sources"][0]["snapshot"]
    assert own.exists()
    found = json.loads(other("find", "*.xlsx", "--policy", str(pol), "--json").stdout)
    assert [f["path"] for f in found] == [f"{src}/budget.xlsx"]
    listing = json.loads(other("ls", sid[:12], str(src), "--policy", str(pol), "--json").stdout)
    assert [e["name"] for e in listing["entries"]] == ["budget.xlsx"]
    empty = tmp_path / "empty.db"
    p = Cli({"DOBAAS_CATALOG": str(empty)})("find", "*.xlsx")
    assert f"no match in the catalog {empty}" in p.stdout
    p = Cli({"DOBAAS_CATALOG": str(empty)})("ls", sid[:12], check=False)
    assert p.returncode == 5 and str(empty) in p.stderr
