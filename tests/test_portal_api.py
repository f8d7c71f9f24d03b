"""The portal's rules over HTTP on a real server (uvicorn on loopback): default passwords block everything,
lockout, CSRF, session fixation, roles, and tenant isolation on every route of the pages and the API."""

from __future__ import annotations

import html
import os
import re
import tarfile
from datetime import UTC, datetime, timedelta
from io import BytesIO

import httpx
import pytest

from orchestrator.portal.app import routes
from tests.portal_site import Site

pytestmark = pytest.mark.portal
NEW = "a long new passphrase 2026"


def _ready(site: Site) -> None:
    """alice (acme), gina (globex) and tom (technician), their passwords changed: once per site."""
    for login, tenant, role in (("alice", "acme", "client"), ("gina", "globex", "client"), ("tom", "", "technician")):
        if login not in site.accounts:
            site.add_user(login, tenant, role)
            site.api(login, change_to=f"{NEW} {login}")


def test_default_password_blocks_every_data_route(sqlite_site: Site) -> None:
    site = sqlite_site
    site.add_user("newbie", "acme")
    c = site.api("newbie")  # logged in, default password not changed
    for method, path in routes():
        if not path.startswith("/api/") or path in ("/api/v1/session", "/api/v1/password"):
            continue
        url = path.format(snapshot_id=site.snapshots["acme"][0], request_id=1, reference="INC-2026-00001")
        r = c.request(method, url, params={"path": "docs", "q": "x"}, json={})
        assert r.status_code == 403 and "password must be changed" in r.text, (method, path, r.status_code)
    web = httpx.Client(base_url=site.url)
    r = web.post("/login", data={"login": "newbie", "password": site.accounts["newbie"]})
    assert r.status_code == 303 and r.headers["location"] == "/password"
    for path in ("/", "/snapshots", f"/snapshots/{site.snapshots['acme'][0]}", "/incidents", "/settings"):
        r = web.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/password", path
    # the change itself: the old password proves it is the user; a short one is refused
    r = c.post("/api/v1/password", json={"old_password": site.accounts["newbie"], "new_password": "short"})
    assert r.status_code == 400 and "12 characters" in r.text
    r = c.post("/api/v1/password", json={"old_password": site.accounts["newbie"], "new_password": NEW})
    assert r.status_code == 200
    # every earlier session ended with the change, the new token works
    assert c.get("/api/v1/snapshots").status_code == 401
    assert web.get("/").status_code == 303
    c.headers["Authorization"] = f"Bearer {r.json()['token']}"
    got = c.get("/api/v1/snapshots")
    assert [s["id"] for s in got.json()] == site.snapshots["acme"][::-1], (got.request.url, got.text[:500])


def test_lockout_after_repeated_failures(sqlite_site: Site) -> None:
    site = sqlite_site
    site.add_user("locky", "acme")
    site.clock.fixed = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    try:
        c = httpx.Client(base_url=site.url)
        for _ in range(5):
            r = c.post("/api/v1/session", json={"login": "locky", "password": "guess"})
            assert r.status_code == 401
        assert "locked" in r.json()["error"]
        r = c.post("/api/v1/session", json={"login": "locky", "password": site.accounts["locky"]})
        assert r.status_code == 401 and "locked" in r.json()["error"]  # the right password too, while locked
        r = c.post("/login", data={"login": "locky", "password": site.accounts["locky"]})
        assert r.status_code == 401 and "locked" in r.text
        site.clock.fixed += timedelta(minutes=16)
        r = c.post("/api/v1/session", json={"login": "locky", "password": site.accounts["locky"]})
        assert r.status_code == 200
    finally:
        site.clock.fixed = None
    # an unknown login answers exactly as a wrong password
    r = c.post("/api/v1/session", json={"login": "mallory", "password": "x"})
    assert r.status_code == 401 and r.json()["error"] == "wrong login or password"


def test_csrf_session_fixation_cookie_flags(sqlite_site: Site) -> None:
    site = sqlite_site
    _ready(site)
    c = httpx.Client(base_url=site.url)
    r = c.post("/login", data={"login": "alice", "password": site.accounts["alice"]},
               headers={"Cookie": "dobaas_session=chosen-by-an-attacker"})  # a session planted in the browser
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    issued = c.cookies.get("dobaas_session", domain="127.0.0.1")
    assert issued and issued != "chosen-by-an-attacker"
    fixed = httpx.Client(base_url=site.url, cookies={"dobaas_session": "chosen-by-an-attacker"})
    assert fixed.get("/").status_code == 303  # the attacker's value opens nothing
    # a form posted without the session's CSRF token (a forged cross-site form) is refused and changes nothing
    for token in ("", "forged"):
        r = c.post("/incidents", data={"csrf": token, "title": "forged"})
        assert r.status_code == 403 and "CSRF" in r.text
    assert "forged" not in c.get("/incidents").text
    r = c.post("/logout", data={"csrf": "nope"})
    assert r.status_code == 403
    assert c.get("/").status_code == 200  # still logged in: the forged logout did nothing
    # served for real (no --insecure-cookies), the session cookie is Secure: sent over HTTPS only
    from fastapi.testclient import TestClient

    from orchestrator.portal.app import create_app

    real = TestClient(create_app(site.catalog, str(site.policies)), base_url="https://portal.test")
    r = real.post("/login", data={"login": "alice", "password": site.accounts["alice"]}, follow_redirects=False)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
    head = c.get("/")
    assert head.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in head.headers[
        "content-security-policy"]


def test_client_cannot_use_technician_routes(sqlite_site: Site) -> None:
    site = sqlite_site
    _ready(site)
    c, csrf = site.web("alice")
    assert c.get("/console").status_code == 403
    assert c.get("/audit").status_code == 403
    api = site.api("alice")
    req = api.post("/api/v1/restores", json={"snapshot_id": site.snapshots["acme"][1], "paths": [
        str(site.sources["acme"] / "docs")], "urgency": "high"}).json()
    r = c.post(f"/requests/{req['id']}/run", data={"csrf": csrf, "command": "files", "arguments": "--in-place x"})
    assert r.status_code == 403
    r = api.post(f"/api/v1/restores/{req['id']}/state", json={"to": "planned", "planned_for": "tonight"})
    assert r.status_code == 400 and "a technician" in r.json()["error"]
    r = api.post("/api/v1/incidents", json={"title": "no backup last night"})
    ref = r.json()["reference"]
    assert re.fullmatch(r"INC-\d{4}-\d{5}", ref)
    r = api.post(f"/api/v1/incidents/{ref}/actions", json={"action": "close"})
    assert r.status_code == 400 and "technician" in r.json()["error"]


def _ids(site: Site, tenant: str) -> tuple[str, int, str]:
    """A snapshot, a restore request and an incident of ``tenant`` (made by its own user)."""
    api = site.api("gina" if tenant == "globex" else "alice")
    snap = site.snapshots[tenant][1]
    req = api.post("/api/v1/restores", json={"snapshot_id": snap, "paths": [str(site.sources[tenant] / "docs")]})
    assert req.status_code == 201, req.text
    inc = api.post("/api/v1/incidents", json={"title": f"{tenant} incident"})
    return snap, req.json()["id"], inc.json()["reference"]


def test_tenant_isolation_on_every_route(sqlite_site: Site) -> None:
    """acme's user tries every route of the app and of the API with globex's ids: all 404 (or 403), and the
    routes without ids never show anything of globex."""
    site = sqlite_site
    _ready(site)
    snap, req_id, ref = _ids(site, "globex")
    _ids(site, "acme")
    web, csrf = site.web("alice")
    api = site.api("alice")
    globex_path = str(site.sources["globex"] / "docs")
    form = {"csrf": csrf, "paths": globex_path, "urgency": "normal", "to": "closed", "action": "confirm",
            "command": "files", "title": "t", "kind": "tree", "snapshot_id": snap, "arguments": "--in-place x",
            "note": "n", "old_password": "x", "new_password": "y", "new_password2": "y"}
    body = {"snapshot_id": snap, "paths": [globex_path], "to": "closed", "action": "confirm", "title": "t",
            "kind": "tree"}
    tried = 0
    for method, path in routes():
        if path in ("/login", "/logout", "/password", "/api/v1/session", "/api/v1/password"):
            continue
        url = path.format(snapshot_id=snap, request_id=req_id, reference=ref)
        params = {"path": globex_path, "q": "*contract*", "tenant": "globex"}
        if path.startswith("/api/"):
            r = api.request(method, url, params=params, json=body)
        else:
            r = web.request(method, url, params=params, data=form if method == "POST" else None)
        tried += 1
        if "{" in path:
            assert r.status_code in (403, 404), (method, path, r.status_code, r.text[:200])
        else:
            assert r.status_code in (200, 201, 303, 400, 403, 404, 422), (method, path, r.status_code)
            leaks = [m for m in ("globex-server", "globex incident", "globex-nightly", "@globex") if m in r.text]
            assert not leaks, (method, path, leaks)
    assert tried >= 30
    # the API's lists hold acme's only
    assert {s["client"] for s in api.get("/api/v1/snapshots", params={"tenant": "globex"}).json()} == {"acme"}
    assert all("acme" in r["path"] for r in api.get("/api/v1/search", params={"q": "*contract*"}).json())
    # and globex's items are all still there, untouched
    gina = site.api("gina")
    assert gina.get(f"/api/v1/restores/{req_id}").json()["state"] == "requested"
    assert gina.get(f"/api/v1/incidents/{ref}").json()["confirmed"]


def test_browse_search_download_over_the_api(site: Site) -> None:
    """On SQLite and on PostgreSQL: a snapshot's tree, a search across dates, a folder downloaded as tar and
    compared byte for byte with the source."""
    _ready(site)
    api = site.api("alice")
    src = site.sources["acme"]
    snap = site.snapshots["acme"][0]
    day = api.get(f"/api/v1/snapshots/{snap}").json()["time"][:10]
    assert snap in [s["id"] for s in api.get("/api/v1/snapshots", params={"day": day}).json()]
    assert api.get("/api/v1/snapshots", params={"day": "2026-02-30"}).status_code == 400
    tree = api.get(f"/api/v1/snapshots/{snap}/tree", params={"path": str(src / "docs")}).json()
    assert sorted(e["name"] for e in tree["entries"]) == ["budget.xlsx", "contracts", "photos"]
    found = api.get("/api/v1/search", params={"q": "budget.xlsx"}).json()
    assert len(found) == 2 and {f["snapshot_count"] for f in found} == {1}  # changed between the two runs
    r = api.get(f"/api/v1/snapshots/{snap}/download", params={"path": str(src / "docs" / "contracts")})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=BytesIO(r.content)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    want = {f"contracts/{p.relative_to(src / 'docs' / 'contracts')}": p.read_bytes()
            for p in (src / "docs" / "contracts").rglob("*") if p.is_file()}
    assert got == want and len(got) == 3
    # a folder whose name is not UTF-8, downloaded by the name the catalog shows (\xNN escapes)
    shown = f"{src}/docs/contracts/archives-\\xff"
    listed = api.get(f"/api/v1/snapshots/{snap}/tree", params={"path": shown}).json()["entries"]
    assert [e["name"] for e in listed] == ["old-\\xe9t\\xe9.txt"]
    r = api.get(f"/api/v1/snapshots/{snap}/download", params={"path": shown})
    with tarfile.open(fileobj=BytesIO(r.content), encoding="utf-8", errors="surrogateescape") as tar:
        names = {os.fsencode(m.name): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert names == {b"archives-\xff/old-\xe9t\xe9.txt": b"latin-1 named file\n" * 20}
    assert api.get(f"/api/v1/snapshots/{snap}/download", params={"path": str(src / "nope")}).status_code == 404


def test_client_settings_validated_like_policy_check(sqlite_site: Site) -> None:
    site = sqlite_site
    _ready(site)
    c, csrf = site.web("alice")
    policy = site.policies / "acme.yaml"
    before = policy.read_text()
    form = {"csrf": csrf, "policy": "acme-nightly", "time": "12:00", "emails": "it@acme.example",
            "exclude:fileserver": "*.tmp"}
    r = c.post("/settings", data=form)
    assert r.status_code == 400 and "outside the provider's backup window 20:00-06:00" in html.unescape(r.text)
    r = c.post("/settings", data={**form, "time": "25:99"})
    assert r.status_code == 400 and "25:99" in r.text
    assert policy.read_text() == before  # every refusal leaves the file as it was
    r = c.post("/settings", data={**form, "time": "23:15", "emails": "it@acme.example\nboss@acme.example",
                                  "exclude:fileserver": "*.tmp\n*.iso"})
    assert r.status_code == 200 and "Saved" in r.text
    text = policy.read_text()
    assert text.startswith("# acme: written by the provider")  # the provider's comments stay
    site.cli("policy", "check", str(policy), "--syntax-only")
    import yaml

    doc = yaml.safe_load(text)
    assert doc["schedule"] == "15 23 * * *"
    assert doc["alerts"]["email"]["to"] == ["it@acme.example", "boss@acme.example"]
    assert doc["sources"][0]["exclude"] == ["*.tmp", "*.iso"]
    # another tenant's policy is out of reach: it does not exist for acme
    r = c.post("/settings", data={**form, "policy": "globex-nightly", "time": "23:00"})
    assert r.status_code == 404
    audit = site.api("tom").get("/api/v1/jobs")  # technicians read every tenant's jobs
    assert {j["client"] for j in audit.json()} == {"acme", "globex"}


def test_a_download_with_a_damaged_chunk_fails_instead_of_looking_whole(sqlite_site: Site) -> None:
    """Bit rot under a folder: the transfer is cut (no end of archive), never a complete tar with zeros in it;
    once the pack is whole again the same download completes."""
    from tests.test_export import damage_file

    site = sqlite_site
    _ready(site)
    vault = site.policies.parent / "globex-vault"
    snap = site.snapshots["globex"][0]
    folder = str(site.sources["globex"] / "docs")
    api = site.api("gina")
    damage_file(vault, snap, "docs/budget.xlsx")
    try:
        with api.stream("GET", f"/api/v1/snapshots/{snap}/download", params={"path": folder}) as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                r.read()
    finally:
        damage_file(vault, snap, "docs/budget.xlsx")  # the same byte flipped back
    r = api.get(f"/api/v1/snapshots/{snap}/download", params={"path": folder})
    with tarfile.open(fileobj=BytesIO(r.content)) as tar:
        assert "docs/budget.xlsx" in tar.getnames()


def test_catalog_database_down_then_back(postgres_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL goes away under a running portal: a clear 503 naming the catalog, no traceback; back, and the
    same portal serves again."""
    import psycopg
    from fastapi.testclient import TestClient

    from orchestrator.portal.app import create_app
    from tests.portal_site import new_catalog

    url = new_catalog("postgresql", tmp_path, postgres_url)
    name = url.rsplit("/", 1)[1]
    admin = postgres_url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"
    client = TestClient(create_app(url, None))
    login = {"login": "nobody", "password": "whatever-it-is"}
    assert client.post("/api/v1/session", json=login).status_code == 401
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f"ALTER DATABASE {name} RENAME TO {name}_away")
    try:
        r = client.post("/api/v1/session", json=login)
        assert r.status_code == 503 and "catalog database" in r.json()["error"], r.text
        r = client.get("/login")
        assert r.status_code == 200  # pages that need no database still answer
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name}_away RENAME TO {name}")
    assert client.post("/api/v1/session", json=login).status_code == 401
