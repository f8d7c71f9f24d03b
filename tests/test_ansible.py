"""The Ansible collection (ansible/) deployed over real SSH: a client site and a provider vault server, each a
real sshd in a private mount namespace (tests/ansible_hosts.py). site.yml twice (the second changes nothing), a
--check --diff run that changes nothing, a real backup from the deployed client into the deployed vault server
over SFTP and a restore, a bad policy refused with the old one kept, upgrade.yml, and ansible-lint."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ansible_hosts import NamespaceHost, free_port, start_host, stop_host

pytestmark = pytest.mark.ansible

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
VERSION = "0.1.0"
CLIENT_PASSPHRASE = "client passphrase, kept in ansible-vault"
PROVIDER_PASSPHRASE = "provider maintenance passphrase"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class Deployment:
    def __init__(self, base: Path, client: NamespaceHost, vault: NamespaceHost, sftp_port: int) -> None:
        self.base, self.client, self.vault, self.sftp_port = base, client, vault, sftp_port
        self.inventory = base / "inventory"
        self.env = dict(os.environ,
                        ANSIBLE_COLLECTIONS_PATH=str(base / "collections"),
                        ANSIBLE_SSH_CONTROL_PATH_DIR=str(base / "cp"),
                        ANSIBLE_LOCAL_TEMP=str(base / "ansible-tmp"),
                        ANSIBLE_RETRY_FILES_ENABLED="false",
                        ANSIBLE_NOCOLOR="1",
                        ANSIBLE_PIPELINING="true",
                        ANSIBLE_CONFIG=str(base / "ansible.cfg"),
                        PATH=f"{BIN}:{os.environ['PATH']}")

    @property
    def vault_url(self) -> str:
        return f"sftp://acme_vault@127.0.0.1:{self.sftp_port}/repo"

    def playbook(self, name: str, *args: str) -> tuple[int, str, dict[str, dict[str, int]]]:
        res = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(self.inventory),
                              "--vault-password-file", str(self.base / "vault-password"), f"dobaas.backup.{name}",
                              *args], capture_output=True, text=True, env=self.env, timeout=900)
        out = res.stdout + res.stderr
        recap = {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
                 for m in RECAP.findall(out)}
        return res.returncode, out, recap

    def policy(self, **changes: object) -> dict:
        policy = {
            "policy": "files-nightly",
            "client": "acme",
            "vault": self.vault_url,
            "remote": {"known_hosts": "/etc/dobaas/vault.known_hosts",
                       "identity_file": "/etc/dobaas/secrets/sftp_identity"},
            "passphrase_file": "/etc/dobaas/secrets/vault-passphrase",
            "schedule": "0 22 * * *",
            "retention": {"keep_daily": 7},
            "sources": [{"name": "documents", "plugin": "files", "paths": ["/srv/documents"]}],
        }
        policy.update(changes)
        return policy

    def write_client_vars(self, policy: dict) -> None:
        (self.inventory / "host_vars" / "acme" / "main.yml").write_text(yaml.safe_dump({
            "agent_vault_server": "vault",
            "agent_secrets": {"vault-passphrase": "{{ vault_acme_passphrase }}"},
            "agent_sftp_identity_key": "{{ vault_acme_sftp_key }}",
            "agent_policies": {"files-nightly": policy},
        }, sort_keys=False))


def _write_inventory(d: Deployment, client: NamespaceHost, vault: NamespaceHost, wheel: Path, client_key: Path) -> None:
    inv = d.inventory
    (inv / "host_vars" / "acme").mkdir(parents=True)
    (inv / "host_vars" / "vault").mkdir(parents=True)
    common = f"-o UserKnownHostsFile={client.known_hosts} -o StrictHostKeyChecking=yes"
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_user": "root", "ansible_ssh_private_key_file": client.key,
                 "ansible_ssh_common_args": common, "ansible_python_interpreter": "/usr/bin/python3",
                 "install_wheel": str(wheel), "install_version": VERSION},
        "children": {
            "vault_servers": {"hosts": {"vault": {"ansible_host": "127.0.0.1", "ansible_port": vault.port}}},
            "clients": {"hosts": {"acme": {"ansible_host": "127.0.0.1", "ansible_port": client.port}}},
            "client_acme": {"hosts": {"acme": None}},
        }}}, sort_keys=False))
    (inv / "host_vars" / "vault" / "main.yml").write_text(yaml.safe_dump({
        "vault_server_public_name": "127.0.0.1",
        "vault_server_sftp_port": d.sftp_port,
        "vault_server_sftp_listen": "127.0.0.1",
        "vault_server_kdf_cost": 12,
        "vault_server_tenants": [{
            "user": "acme_vault", "client": "acme", "client_host": "acme", "quota": "64M", "contract": "ACME-TEST-1",
            "public_key": (client_key.with_suffix(".pub")).read_text().strip(),
            "passphrase": "{{ vault_acme_provider_passphrase }}",
            "client_passphrase": "{{ vault_acme_passphrase }}"}],
    }, sort_keys=False))
    d.write_client_vars(d.policy())
    # the secrets, as a provider keeps them: ansible-vault encrypted files
    (d.base / "vault-password").write_text("inventory vault password\n")
    secrets = {
        inv / "host_vars" / "acme" / "vault.yml": {"vault_acme_passphrase": CLIENT_PASSPHRASE,
                                                   "vault_acme_sftp_key": client_key.read_text()},
        inv / "host_vars" / "vault" / "vault.yml": {"vault_acme_provider_passphrase": PROVIDER_PASSPHRASE,
                                                    "vault_acme_passphrase": CLIENT_PASSPHRASE},
    }
    for path, values in secrets.items():
        path.write_text(yaml.safe_dump(values))
        subprocess.run([str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(d.base / "vault-password"),
                        str(path)], check=True, capture_output=True, env=d.env)
        assert path.read_text().startswith("$ANSIBLE_VAULT;")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("ansible")
    wheel_dir = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(REPO)],
                   check=True, capture_output=True)
    wheel = next(wheel_dir.glob(f"dobaas-{VERSION}-*.whl"))
    (base / "collections" / "ansible_collections" / "dobaas").mkdir(parents=True)
    (base / "collections" / "ansible_collections" / "dobaas" / "backup").symlink_to(REPO / "ansible")
    (base / "cp").mkdir()
    (base / "ansible.cfg").write_text("[defaults]\nhost_key_checking = True\n")
    admin_key = base / "admin_key"
    client_key = base / "acme_sftp_key"
    for k in (admin_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    known = str(base / "known_hosts")
    hosts: list[NamespaceHost] = []
    try:
        vault = start_host("vault", base / "vault-host", str(admin_key), known)
        hosts.append(vault)
        client = start_host("acme", base / "client-host", str(admin_key), known)
        hosts.append(client)
        d = Deployment(base, client, vault, free_port())
        _write_inventory(d, client, vault, wheel, client_key)
        rc, out, recap = d.playbook("site")
        assert rc == 0, out[-6000:]
        assert recap["acme"]["changed"] > 0 and recap["vault"]["changed"] > 0, out[-3000:]
        # the tenants' sshd: systemd would start the unit the role installed; there is none here, so the test
        # starts the same command line, inside the vault host
        unit = vault.read("/etc/systemd/system/dobaas-vault-sshd.service")
        start = re.search(r"^ExecStart=(.*)$", unit, re.M)
        assert start is not None
        vault.ssh(start.group(1).replace(" -D ", " ") + " -E /var/log/dobaas-vault-sshd.log")
        yield d
    finally:
        for h in hosts:
            stop_host(h)


def test_site_runs_twice_and_the_second_run_changes_nothing(deployed: Deployment) -> None:
    rc, out, recap = deployed.playbook("site")
    assert rc == 0, out[-6000:]
    assert recap["acme"]["changed"] == 0 and recap["vault"]["changed"] == 0, out[-6000:]
    rc, out, recap = deployed.playbook("site", "--check", "--diff")
    assert rc == 0, out[-6000:]
    assert recap["acme"]["changed"] == 0 and recap["vault"]["changed"] == 0, out[-6000:]


def test_deployed_layout_is_what_the_docs_say(deployed: Deployment) -> None:
    c, v = deployed.client, deployed.vault
    assert c.ssh("/opt/dobaas/venv/bin/dobaas --version").stdout.split()[-1] == VERSION
    # secrets root-only, policies readable by the dobaas group, the daemon's unit confined
    modes = c.ssh("stat -c '%U:%G %a %n' /etc/dobaas/secrets /etc/dobaas/secrets/* /etc/dobaas/policies/*").stdout
    assert "root:root 700 /etc/dobaas/secrets" in modes
    assert "root:root 400 /etc/dobaas/secrets/vault-passphrase" in modes
    assert "root:root 400 /etc/dobaas/secrets/sftp_identity" in modes
    assert "root:dobaas 640 /etc/dobaas/policies/files-nightly.yaml" in modes
    assert c.read("/etc/dobaas/secrets/vault-passphrase") == CLIENT_PASSPHRASE
    assert c.ssh("id -u dobaas").returncode == 0
    unit = c.read("/etc/systemd/system/dobaas-daemon.service")
    for option in ("ProtectSystem=strict", "NoNewPrivileges=true", "StateDirectory=dobaas", "Restart=on-failure",
                   "ExecReload=/bin/kill -HUP $MAINPID"):
        assert option in unit
    for host, path in ((c, "/etc/systemd/system/dobaas-daemon.service"),
                       (v, "/etc/systemd/system/dobaas-vault-sshd.service"),
                       (v, "/etc/systemd/system/dobaas-vault-maintain-acme_vault.service"),
                       (v, "/etc/systemd/system/dobaas-vault-maintain-acme_vault.timer")):
        res = host.ssh(f"systemd-analyze verify {path}", check=False)
        assert res.returncode == 0, res.stderr
    # the vault host: the tenant's own file system of the subscribed size, the residency record
    df = v.ssh("df -B1 --output=size,target /srv/vaults/acme_vault/repo").stdout.split()
    assert df[-1] == "/srv/vaults/acme_vault/repo" and 40 * 2**20 < int(df[-2]) <= 64 * 2**20
    residency = json.loads(v.read("/etc/dobaas-vault/residency.json"))
    assert residency["location"] == "FR"
    assert residency["tenants"] == [{"user": "acme_vault", "client": "acme", "location": "FR",
                                     "contract": "ACME-TEST-1", "vault": "/srv/vaults/acme_vault/repo",
                                     "quota": "64M"}]
    assert json.loads(v.read("/srv/vaults/acme_vault/repo/config"))["location"] == "FR"
    # the maintenance policy is the client's (retention, source names)
    assert yaml.safe_load(v.read("/etc/dobaas-vault/tenants/acme_vault/files-nightly.yaml"))["retention"] == \
        {"keep_daily": 7}


def test_backup_from_the_deployed_client_into_the_deployed_vault_server(deployed: Deployment) -> None:
    c, v = deployed.client, deployed.vault
    c.ssh("mkdir -p /srv/documents/compta && printf 'bilan 2026\\n' > /srv/documents/compta/bilan.txt"
          " && head -c 3000000 /dev/urandom > /srv/documents/photo.raw")
    res = c.ssh("/opt/dobaas/venv/bin/dobaas run /etc/dobaas/policies/files-nightly.yaml --json", check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    snap = report["sources"][0]["snapshot"]
    assert report["sources"][0]["status"] == "ok" and snap
    # on the vault server: the client's objects, read-only and the tenant's; nothing the client can delete
    listing = v.ssh("find /srv/vaults/acme_vault/repo/snapshots -type f -printf '%u %m %f\\n'").stdout.splitlines()
    assert listing and all(line.startswith("acme_vault 444 ") for line in listing), listing
    # with the client's own key, through the deployed sshd: removing or renaming history is refused
    name = listing[0].split()[-1]
    sftp = c.ssh(f"printf 'rm snapshots/{name}\\nrename snapshots/{name} x\\n' | sftp -b - -P {deployed.sftp_port}"
                 " -i /etc/dobaas/secrets/sftp_identity -o UserKnownHostsFile=/etc/dobaas/vault.known_hosts"
                 " -o StrictHostKeyChecking=yes acme_vault@127.0.0.1", check=False)
    assert sftp.returncode != 0 and "denied" in sftp.stderr.lower(), sftp.stderr
    assert v.ssh(f"test -f /srv/vaults/acme_vault/repo/snapshots/{name}", check=False).returncode == 0
    env = ("DOBAAS_SFTP_KNOWN_HOSTS=/etc/dobaas/vault.known_hosts"
           " DOBAAS_SFTP_IDENTITY=/etc/dobaas/secrets/sftp_identity"
           " DOBAAS_PASSPHRASE_FILE=/etc/dobaas/secrets/vault-passphrase")
    c.ssh(f"{env} /opt/dobaas/venv/bin/dobaas restore files {snap} /srv/documents/compta/bilan.txt "
          f"/srv/documents/photo.raw --vault {shlex.quote(deployed.vault_url)} --target /root/restored")
    sums = c.ssh("cd /srv/documents && sha256sum compta/bilan.txt photo.raw").stdout
    restored = c.ssh("cd /root/restored && sha256sum compta/bilan.txt photo.raw").stdout  # paths under the root
    assert restored == sums
    # the provider's maintenance, exactly as its unit runs it, keeps the snapshot (retention keep_daily: 7)
    unit = v.read("/etc/systemd/system/dobaas-vault-maintain-acme_vault.service")
    env_line = re.search(r"^Environment=(.*)$", unit, re.M)
    assert env_line is not None
    for command in re.findall(r"^ExecStart=(.*)$", unit, re.M):
        res = v.ssh(f"{env_line.group(1)} {command} --json", check=False)
        assert res.returncode == 0, res.stdout + res.stderr
    assert "verify" in command and json.loads(res.stdout)["verify"]["ok"] is True
    assert c.ssh(f"{env} /opt/dobaas/venv/bin/dobaas snapshots --vault {shlex.quote(deployed.vault_url)} --json"
                 ).stdout.count(snap) == 1


def test_a_policy_with_an_error_never_lands(deployed: Deployment) -> None:
    c = deployed.client
    before = hashlib.sha256(c.read("/etc/dobaas/policies/files-nightly.yaml").encode()).hexdigest()
    deployed.write_client_vars(deployed.policy(schedule="0 0 30 2 *"))  # 30 February never comes
    try:
        rc, out, recap = deployed.playbook("site", "--limit", "acme")
        assert rc != 0 and recap["acme"]["failed"] == 1, out[-4000:]
        assert "failed to validate" in out and "30" in out and "schedule" in out, out[-4000:]
        after = hashlib.sha256(c.read("/etc/dobaas/policies/files-nightly.yaml").encode()).hexdigest()
        assert after == before
    finally:
        deployed.write_client_vars(deployed.policy())
    rc, out, recap = deployed.playbook("site", "--limit", "acme")
    assert rc == 0 and recap["acme"]["changed"] == 0, out[-4000:]


def test_upgrade_waits_for_no_running_job_and_changes_nothing_on_the_same_release(deployed: Deployment) -> None:
    rc, out, recap = deployed.playbook("upgrade")
    assert rc == 0, out[-6000:]
    assert recap["acme"]["changed"] == 0 and "vault" not in recap, out[-4000:]
    assert "Wait until no backup is running" in out


def test_the_collection_builds_and_lints_clean(tmp_path: Path) -> None:
    res = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO / "ansible"),
                          "--output-path", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "dobaas-backup-0.1.0.tar.gz").exists()
    res = subprocess.run([str(BIN / "ansible-lint"), "--project-dir", ".", "--profile", "production", "--nocolor",
                          "."], cwd=REPO / "ansible", capture_output=True, text=True,
                         env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "0 failure(s), 0 warning(s)" in res.stdout + res.stderr
