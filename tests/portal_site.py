"""A provider site for the portal tests: two clients (acme, globex), each with real backups of a real tree in its
own vault, recorded in one catalog (SQLite or a real PostgreSQL), their policy files in one directory, accounts
created with `dobaas portal user add`, and the portal served by uvicorn on a loopback port with a clock the
tests move."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

if TYPE_CHECKING:
    from tests.conftest import Cli  # conftest imports this module

TENANTS = ("acme", "globex")


class Clock:
    """The portal's clock: real time unless a test sets it."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


@dataclass
class Site:
    url: str
    catalog: str
    policies: Path
    sources: dict[str, Path]
    snapshots: dict[str, list[str]]  # tenant -> snapshot ids, oldest first
    clock: Clock
    cli: Cli
    accounts: dict[str, str] = field(default_factory=dict)  # login -> current password
    inbox: list[str] = field(default_factory=list)  # messages the clients' SMTP relay received

    def add_user(self, login: str, tenant: str = "", role: str = "client") -> str:
        out = json.loads(self.cli("portal", "user", "add", "--login", login, "--tenant", tenant, "--role", role,
                                  "--catalog", self.catalog, "--json").stdout)
        self.accounts[login] = out["password"]
        return out["password"]

    def api(self, login: str, change_to: str | None = None) -> httpx.Client:
        """An API client logged in as ``login`` (its default password changed to ``change_to`` first)."""
        c = httpx.Client(base_url=self.url, timeout=30)
        r = c.post("/api/v1/session", json={"login": login, "password": self.accounts[login]})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        if r.json()["must_change_password"] and change_to:
            r = c.post("/api/v1/password", json={"old_password": self.accounts[login], "new_password": change_to},
                       headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            self.accounts[login] = change_to
            token = r.json()["token"]
        c.headers["Authorization"] = f"Bearer {token}"
        return c

    def web(self, login: str) -> tuple[httpx.Client, str]:
        """A cookie session of ``login`` (password already changed) and its CSRF token."""
        c = httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)
        r = c.post("/login", data={"login": login, "password": self.accounts[login]})
        assert r.status_code == 303 and r.headers["location"] == "/", (r.status_code, r.text[:300])
        page = c.get("/incidents").text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        return c, csrf


def make_source(root: Path, tenant: str) -> None:
    """Documents a client would keep: nested folders, binary and text files, a name with accents."""
    docs = root / "docs"
    (docs / "contracts" / "2026").mkdir(parents=True)
    (docs / "photos").mkdir()
    (docs / "contracts" / "2026" / f"{tenant}-contract.txt").write_text(f"contract of {tenant}\n" * 300)
    (docs / "contracts" / "signed.pdf").write_bytes(os.urandom(150_000))
    (docs / "photos" / "site été.jpg").write_bytes(os.urandom(90_000))
    (docs / "budget.xlsx").write_bytes(os.urandom(40_000))
    odd = os.path.join(os.fsencode(docs / "contracts"), b"archives-\xff")  # a name that is not UTF-8
    os.mkdir(odd)
    with open(os.path.join(odd, b"old-\xe9t\xe9.txt"), "wb") as f:
        f.write(b"latin-1 named file\n" * 20)
    (root / "scratch.tmp").write_text("excluded")
    (root / "readme.txt").write_text(f"{tenant} file server\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_catalog(kind: str, tmp: Path, postgres_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'catalog.db'}"
    import psycopg

    assert postgres_url is not None
    name = f"portal_{os.getpid()}_{int(time.monotonic() * 1000) % 10**8}"
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def build_site(tmp: Path, cli: Cli, catalog: str, smtp: str = "127.0.0.1:25") -> Site:
    from tests.conftest import PASS

    policies = tmp / "policies"
    policies.mkdir()
    secret = tmp / "passphrase"
    secret.write_text(PASS)
    secret.chmod(0o600)
    sources: dict[str, Path] = {}
    snaps: dict[str, list[str]] = {}
    for tenant in TENANTS:
        src = tmp / f"{tenant}-server"
        src.mkdir()
        make_source(src, tenant)
        vault = tmp / f"{tenant}-vault"
        cli("vault", "init", str(vault), "--kdf-cost", "12", "--block-size", "4096")
        policy = policies / f"{tenant}.yaml"
        policy.write_text(f"# {tenant}: written by the provider\n" + yaml.safe_dump({
            "policy": f"{tenant}-nightly", "client": tenant, "vault": str(vault), "passphrase_file": str(secret),
            "catalog": catalog, "schedule": "30 22 * * *", "window": "20:00-06:00", "quota": "10GiB",
            "retention": {"keep_last": 30},
            "alerts": {"email": {"to": [f"it@{tenant}.example"], "from": "backup@provider.example", "smtp": smtp}},
            "sources": [{"name": "fileserver", "plugin": "files", "paths": [str(src)], "exclude": ["*.tmp"]}]},
            sort_keys=False))
        snaps[tenant] = []
        for round_ in range(2):
            if round_:
                (src / "docs" / "budget.xlsx").write_bytes(os.urandom(40_000))
            res = json.loads(cli("run", str(policy), "--catalog", catalog, "--json", passphrase=None).stdout)
            snaps[tenant].append(res["sources"][0]["snapshot"])
        sources[tenant] = src
    return Site(url="", catalog=catalog, policies=policies, sources=sources, snapshots=snaps, clock=Clock(), cli=cli)


@contextlib.contextmanager
def serving(site: Site) -> Iterator[Site]:
    """The portal of ``site`` served by uvicorn on a free loopback port while the block runs."""
    import uvicorn

    from orchestrator.portal.app import create_app

    app = create_app(site.catalog, str(site.policies), secure_cookies=False, clock=site.clock)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and t.is_alive(), "the portal did not start"
        time.sleep(0.05)
    site.url = f"http://127.0.0.1:{port}"
    try:
        yield site
    finally:
        server.should_exit = True
        t.join(10)


@pytest.fixture(scope="session")
def _sites(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Site]]:
    """Sites built on demand, one per catalog kind for the whole session (building one costs four backups):
    every test creates accounts of its own, and puts back what it changes."""
    from aiosmtpd.controller import Controller

    from tests.conftest import Cli
    from tests.test_alerts import Inbox

    with contextlib.ExitStack() as stack:
        built: dict[str, Site] = {}

        def get(kind: str) -> Site:
            if kind not in built:
                tmp = tmp_path_factory.mktemp(f"portal-{kind}")
                pg = request.getfixturevalue("postgres_url") if kind == "postgresql" else None
                inbox = Inbox()
                relay = Controller(inbox, hostname="127.0.0.1", port=_free_port())
                relay.start()
                stack.callback(relay.stop)
                site = build_site(tmp, Cli({}), new_catalog(kind, tmp, pg), smtp=f"127.0.0.1:{relay.port}")
                site.inbox = inbox.messages
                built[kind] = stack.enter_context(serving(site))
            return built[kind]

        yield get


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, _sites: Callable[[str], Site]) -> Site:
    """The site on SQLite, then on PostgreSQL."""
    return _sites(request.param)


@pytest.fixture(scope="session")
def sqlite_site(_sites: Callable[[str], Site]) -> Site:
    return _sites("sqlite")
