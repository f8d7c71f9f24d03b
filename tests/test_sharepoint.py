"""SharePoint over the strict WS-Man double (pywinrm unmodified, real NTLM over HTTPS, only the shipped scripts
accepted): farm backups full then differential, site collection backups, with the backup files written by the
model farm on the real Samba share; restores to a recovery farm and to a new site URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.backup.runner import run_policy
from orchestrator.catalog.db import Catalog
from orchestrator.policy.model import load_policy
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.repository import Vault
from tests.conftest import PASS, Cli
from tests.samba import SambaServer, share_folder
from tests.sharepoint_model import TOP, Farm
from tests.wsman import Double, start, unparsable_scripts

pytestmark = pytest.mark.sharepoint
SCRIPTS = Path(__file__).resolve().parent.parent / "plugins" / "sharepoint" / "scripts"
USER, PASSWORD = "ACME\\spfarm", "Sp-farm-pass-1"
INTRANET, RH = "https://intranet.acme.local", "https://intranet.acme.local/sites/rh"


@pytest.fixture(scope="module")
def wsman() -> Iterator[Double]:
    double, stop = start({USER: PASSWORD}, [SCRIPTS])
    yield double
    stop()


@pytest.fixture
def sp(wsman: Double, samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    folder, path = share_folder(samba.share_dir, "sp")
    farm = Farm(path, f"\\\\fs1\\{samba.share}\\{folder}",
                {INTRANET: {"accueil.aspx": "bienvenue"}, RH: {"conges.docx": "v1", "paie.xlsx": "v1"}})
    wsman.handlers = farm.handlers()
    monkeypatch.setenv("SP_PASSWORD", PASSWORD)
    monkeypatch.setenv("SP_SMB_PASSWORD", samba.password)
    vault_dir = tmp_path / "vault"
    Vault.create(LocalBackend(str(vault_dir)), PASS, kdf_cost=12)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")

    def run(**extra: object):  # type: ignore[no-untyped-def]
        pfile = tmp_path / "sp.yaml"
        pfile.write_text(yaml.safe_dump({"policy": "sp", "client": "acme", "vault": str(vault_dir), "sources": [{
            "name": "intranet", "plugin": "sharepoint", "host": "127.0.0.1", "port": wsman.port, "user": USER,
            "password_env": "SP_PASSWORD", "thumbprint": wsman.thumbprint, "share": samba.url(folder),
            "share_path": farm.share_unc, "share_user": samba.user, "share_password_env": "SP_SMB_PASSWORD",
            **extra}]}))
        return run_policy(load_policy(str(pfile)), Vault.open(LocalBackend(str(vault_dir)), PASS),
                          catalog).sources[0]

    cli = Cli({"SP_PASSWORD": PASSWORD, "SP_SMB_PASSWORD": samba.password})
    return farm, run, vault_dir, Path(path), cli


def test_the_shipped_scripts_parse_as_powershell() -> None:
    assert len(list(SCRIPTS.glob("*.ps1"))) == 4 and unparsable_scripts(SCRIPTS) == []


def test_farm_full_then_differential_and_restore_on_a_recovery_farm(sp) -> None:
    farm, run, vault_dir, share, cli = sp
    full = run()
    assert full.status == "ok", full.errors
    farm.sites[RH]["paie.xlsx"] = "v2"
    farm.sites[RH]["notes.txt"] = "nouveau"
    diff = run()
    assert diff.status == "ok", diff.errors
    v = Vault.open(LocalBackend(str(vault_dir)), PASS)
    s_full, s_diff = v.read_snapshot(full.snapshot), v.read_snapshot(diff.snapshot)
    assert (s_full.meta["method"], s_diff.meta["method"]) == ("Full", "Differential")
    names = {i["name"] for i in s_diff.items}
    assert "spbr0000/00000001.bak" in names and "spbr0001/00000001.bak" in names and "spbrtoc.xml" in names
    # on the share: the full stays (the next differential's base), the differential's folder is gone
    (base,) = [p for p in share.iterdir() if p.is_dir()]
    assert sorted(p.name for p in base.iterdir()) == ["spbr0000", "spbrtoc.xml"]
    expected = {u: dict(d) for u, d in farm.sites.items()}
    # the differential snapshot restores alone (its full comes with it) onto another farm server
    p = cli("restore", "sharepoint", diff.snapshot, "--vault", str(vault_dir), "--host", "localhost", "--json",
            check=False)
    assert p.returncode == 0, p.stderr
    assert farm.restored == expected and json.loads(p.stdout)["restored_as"] == TOP
    assert sorted(x.name for x in share.iterdir() if x.name.startswith("dobaas-restore")) == []
    p = cli("restore", "sharepoint", diff.snapshot, "--vault", str(vault_dir), check=False)
    assert p.returncode == 2 and "--in-place" in p.stderr  # Restore-SPFarm overwrites: not the source farm
    # the base full vanishes from the share: the next run is a full, with a warning
    import shutil

    shutil.rmtree(base / "spbr0000")
    third = run()
    assert third.status == "ok" and any("gone from" in w for w in third.warnings), third.warnings
    assert Vault.open(LocalBackend(str(vault_dir)), PASS).read_snapshot(third.snapshot).meta["method"] == "Full"


def test_site_collections_backed_up_and_restored_to_a_new_url(sp) -> None:
    farm, run, vault_dir, share, cli = sp
    res = run(mode="sites", sites=[INTRANET, RH])
    assert res.status == "ok", res.errors
    assert list(share.iterdir()) == []  # the files left the share once stored
    new = "https://intranet.acme.local/sites/rh-restored"
    p = cli("restore", "sharepoint", res.snapshot, "--vault", str(vault_dir), "--site", RH, "--as-url", new,
            "--json", check=False)
    assert p.returncode == 0, p.stderr
    assert farm.sites[new] == farm.sites[RH]
    p = cli("restore", "sharepoint", res.snapshot, "--vault", str(vault_dir), "--site", RH, "--as-url", INTRANET,
            check=False)
    assert p.returncode == 1 and "already exists" in p.stderr


@pytest.mark.parametrize("fault, expect", [
    ("service", "SharePoint Administration service (SPAdminV4) is not running"),
    ("rights", "lacks SharePoint_Shell_Access"),
])
def test_service_stopped_and_rights_missing_are_named_and_leave_nothing(sp, fault: str, expect: str) -> None:
    farm, run, vault_dir, share, _cli = sp
    farm.admin_running = fault != "service"
    farm.shell_access = fault != "rights"
    res = run()
    assert res.status == "failed" and expect in " ".join(res.errors), res.errors
    assert list(share.iterdir()) == []
    assert Vault.open(LocalBackend(str(vault_dir)), PASS).list_snapshots()[0] == []
    farm.admin_running = farm.shell_access = True
    assert run().status == "ok"
