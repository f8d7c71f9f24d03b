"""Shared fixtures: vaults with a cheap KDF, generated images, and the real ``dobaas`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.project_env import borrow_imports, rerun_inside

borrow_imports()  # before any import of the project's dependencies: see tests/project_env.py

from orchestrator.vault.backend.local import LocalBackend  # noqa: E402
from orchestrator.vault.repository import Vault  # noqa: E402

PASS = "correct horse battery staple"


def pytest_configure(config: pytest.Config) -> None:
    rerun_inside(config)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch /var/cache/dobaas or the machine's catalog."""
    monkeypatch.setenv("DOBAAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("DOBAAS_CATALOG", str(tmp_path_factory.mktemp("catalog") / "catalog.db"))
DOBAAS = str(Path(sys.executable).with_name("dobaas"))


@pytest.fixture
def utc_local(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Local time is UTC for this test (retention buckets and schedules are local-time days and hours)."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return tmp_path / "vault"


@pytest.fixture
def vault(vault_path: Path) -> Vault:
    """A fresh vault with 4 KiB blocks and small packs, so tiny images exercise every code path."""
    return Vault.create(LocalBackend(str(vault_path)), PASS, kdf_cost=12, block_size=4096, pack_size=64 * 1024)


def reopen(vault: Vault) -> Vault:
    return Vault.open(LocalBackend(vault.backend.location), PASS)


@pytest.fixture
def write_image(tmp_path: Path) -> Callable[..., Path]:
    def make(data: bytes, name: str = "disk.img") -> Path:
        p = tmp_path / name
        p.write_bytes(data)
        return p

    return make


def mixed_bytes(size: int, seed: int = 0) -> bytes:
    """Random, zero and repetitive regions: exercises holes, compression and dedup."""
    import random

    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.randrange(3)
        n = rng.randrange(1, 20000)
        if kind == 0:
            out += bytes(n)
        elif kind == 1:
            out += rng.randbytes(n)
        else:
            out += (b"backup %d " % rng.randrange(100)) * (n // 10 + 1)
    return bytes(out[:size])


class Cli:
    """Runs the installed ``dobaas`` command as a user would."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, passphrase: str | None = PASS, check: bool = True,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in {**os.environ, **self.env}.items() if k != "DOBAAS_PASSPHRASE"}
        if passphrase is not None:
            env["DOBAAS_PASSPHRASE"] = passphrase
        p = subprocess.run([DOBAAS, *args], capture_output=True, text=True, env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError(f"dobaas {' '.join(args)} exited {p.returncode}: {p.stderr}")
        return p

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env, "DOBAAS_PASSPHRASE": PASS}
        return subprocess.Popen([DOBAAS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def cli() -> Cli:
    return Cli({})


@pytest.fixture
def cli_vault(cli: Cli, vault_path: Path) -> Path:
    """A vault created through the CLI (cheap KDF, 4 KiB blocks)."""
    cli("vault", "init", str(vault_path), "--kdf-cost", "12", "--block-size", "4096")
    return vault_path


def assert_one_line_error(p: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert p.returncode == code, (p.returncode, p.stderr)
    err = p.stderr.strip()
    assert "Traceback" not in err, err
    assert err.count("\n") == 0, err
    assert err.startswith("dobaas: error:"), err
    for f in fragments:
        assert f in err, (f, err)


from tests.filetrees import files_vault, setup  # noqa: E402,F401  (trees backed up into vaults)
from tests.libvirt_env import domains, libvirt_daemons  # noqa: E402,F401  (real libvirtd + QEMU domains)
from tests.mariadb import mariadb  # noqa: E402,F401  (session fixture: a real MariaDB on loopback)
from tests.oracle_env import oracle_hosts  # noqa: E402,F401  (session fixture: Oracle hosts over real SSH)
from tests.portal_site import _sites, site, sqlite_site  # noqa: E402,F401  (the portal on a real server)
from tests.postgres import postgres_url  # noqa: E402,F401  (session fixture: a real PostgreSQL on loopback)
from tests.s3server import s3server  # noqa: E402,F401  (session fixture: a real SeaweedFS S3 server on loopback)
from tests.samba import samba  # noqa: E402,F401  (session fixture: a real smbd on loopback)
from tests.sshd import sshd  # noqa: E402,F401  (session fixture: a real OpenSSH vault host on loopback)
from tests.vcsim import vcsim, vcsim_env  # noqa: E402,F401  (session fixture: govmomi vSphere simulator)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):  # type: ignore[no-untyped-def]
    """pytest-playwright drives Debian's Chromium (`make test` installs it; browsers are never downloaded)."""
    assert os.path.exists("/usr/bin/chromium"), "Chromium is missing: `make test` installs it (chromium)"
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium", "headless": True}
