"""`dobaas mount` (read-only FUSE) and files copied out of the filesystems inside disk image snapshots: a KVM
domain's ext4 partition, XFS and NTFS partitions, and the clean-up after a mount process killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Cli

pytestmark = pytest.mark.export
MiB = 2**20


def mounted(cli: Cli, *args: str) -> tuple[subprocess.Popen[str], dict]:
    """Start `dobaas mount … --json` and wait for its ready line."""
    p = cli.popen("mount", *args, "--json")
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line:
        raise AssertionError(f"dobaas mount ended: {p.stderr.read() if p.stderr else ''}")
    return p, json.loads(line)


def stop(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0, p.stderr.read() if p.stderr else ""


def mounts_below(path: Path) -> list[str]:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4] == real or ln.split()[4].startswith(real + "/")]


def same_tree(src: Path, seen: Path) -> None:
    """Every entry of ``src`` reads the same through the mount: content, mode, owner, time, link, xattrs."""
    for dirpath, dirs, files in os.walk(src):
        for name in dirs + files:
            a = Path(dirpath) / name
            b = seen / a.relative_to(src)
            sa, sb = os.lstat(a), os.lstat(b)
            assert (sa.st_mode, sa.st_uid, sa.st_gid) == (sb.st_mode, sb.st_uid, sb.st_gid), a
            if not stat.S_ISDIR(sa.st_mode):
                assert sa.st_mtime_ns == sb.st_mtime_ns, a
            if stat.S_ISREG(sa.st_mode):
                assert a.read_bytes() == b.read_bytes(), a
                assert {n: os.getxattr(a, n) for n in os.listxattr(a) if n.startswith("user.")} == \
                    {n: os.getxattr(b, n) for n in os.listxattr(b) if n.startswith("user.")}, a
            elif stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b)


def test_mount_shows_snapshots_by_source_and_date_read_only(files_vault, tmp_path: Path, cli: Cli) -> None:
    src, vault, _snap, policy = files_vault
    before = (src / "docs" / "report.txt").read_bytes()
    (src / "docs" / "report.txt").write_text("changed after the first backup\n")
    time.sleep(1.1)  # two snapshots in two different seconds
    cli("run", str(policy))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p, _ = mounted(cli, "--vault", str(vault), "--client", "acme", str(mnt))
    try:
        source = mnt / "acme" / "documents"
        dates = sorted(n for n in os.listdir(source) if n != "latest")
        assert len(dates) == 2 and os.readlink(source / "latest") == dates[-1]
        inside = str(src).lstrip("/")
        same_tree(src, source / "latest" / inside)
        assert (source / dates[0] / inside / "docs" / "report.txt").read_bytes() == before
        with pytest.raises(OSError):
            (source / "latest" / inside / "docs" / "new.txt").write_text("no")
        assert (source / "latest" / inside / "big-sparse.img").stat().st_size == 64 * MiB
    finally:
        stop(p)
    assert mounts_below(mnt) == []


def test_a_damaged_chunk_is_an_io_error_on_its_file_only(files_vault, tmp_path: Path, cli: Cli) -> None:
    from tests.test_export import damage_file

    src, vault, snap, _ = files_vault
    damage_file(vault, snap["id"], "docs/report.txt")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p, _ = mounted(cli, snap["id"], "--vault", str(vault), str(mnt))
    try:
        inside = mnt / str(src).lstrip("/")
        with pytest.raises(OSError) as err:
            (inside / "docs" / "report.txt").read_bytes()
        assert err.value.errno == 5  # EIO
        assert (inside / "data.bin").read_bytes() == (src / "data.bin").read_bytes()
    finally:
        stop(p)


def partitioned_disk(path: Path, tmp: Path) -> dict[str, bytes]:
    """A GPT disk: p1 ext4 made from a directory (mkfs.ext4 -d), p2 XFS and p3 NTFS, each with a file written
    through a read-write loop mount. Returns {partition/path: content}."""
    files = {"p1/etc/hosts": b"127.0.0.1 localhost erp-01\n", "p2/data/ledger.csv": os.urandom(200_000),
             "p3/Users/Public/facture.txt": "facture n° 42\r\n".encode()}
    root = tmp / "p1root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_bytes(files["p1/etc/hosts"])
    os.chmod(root / "etc" / "hosts", 0o640)
    sizes = {1: 32 * MiB, 2: 320 * MiB, 3: 16 * MiB}  # XFS wants 300 MiB at least
    subprocess.run(["truncate", "-s", str(sum(sizes.values()) + 4 * MiB), str(path)], check=True)
    script = "label: gpt\n" + "".join(f"size={s // 512}, type=linux\n" for s in sizes.values())
    subprocess.run(["sfdisk", "-q", str(path)], input=script.encode(), check=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, check=True).stdout)
    starts = {n: p["start"] * 512 for n, p in enumerate(table["partitiontable"]["partitions"], 1)}
    for n, start in starts.items():
        part = tmp / f"p{n}.fs"
        subprocess.run(["truncate", "-s", str(sizes[n]), str(part)], check=True)
        if n == 1:
            subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(part)], check=True)
        else:
            subprocess.run(["mkfs.xfs", "-q", str(part)] if n == 2 else ["mkntfs", "-q", "-F", "-Q", str(part)],
                           check=True, capture_output=True)
            mnt = tmp / f"rw{n}"
            mnt.mkdir()
            subprocess.run(["mount", "-t", "xfs" if n == 2 else "ntfs-3g", "-o", "loop", str(part), str(mnt)],
                           check=True)
            try:
                for key, data in files.items():
                    if key.startswith(f"p{n}/"):
                        f = mnt / key.split("/", 1)[1]
                        f.parent.mkdir(parents=True, exist_ok=True)
                        f.write_bytes(data)
            finally:
                subprocess.run(["umount", str(mnt)], check=True)
        subprocess.run(["dd", f"if={part}", f"of={path}", "bs=1M", f"seek={start}", "oflag=seek_bytes",
                        "conv=notrunc,sparse", "status=none"], check=True)
        part.unlink()
    return files


def test_files_of_xfs_and_ntfs_partitions_and_cleanup_after_kill(tmp_path: Path, cli: Cli) -> None:
    disk = tmp_path / "disk.raw"
    files = partitioned_disk(disk, tmp_path)
    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    snap = json.loads(cli("backup", "image", str(disk), "--vault", str(vault), "--name", "acme/fileserver",
                          "--json").stdout)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p, ready = mounted(cli, snap["id"], "--filesystems", "--vault", str(vault), str(mnt))
    try:
        assert sorted(os.path.basename(x) for x in ready["partitions"]) == ["p1", "p2", "p3"]
        for key, data in files.items():
            part, rel = key.split("/", 1)
            assert (mnt / "image.img.d" / part / rel).read_bytes() == data, key
        assert (mnt / "image.img").stat().st_size == disk.stat().st_size
    finally:
        p.send_signal(signal.SIGKILL)  # no chance to unmount
        p.wait()
    assert len(mounts_below(mnt)) == 4  # the view and three partitions, left behind
    out = json.loads(cli("mount", "--unmount", str(mnt), "--json").stdout)
    assert len(out["unmounted"]) == 4 and mounts_below(mnt) == []
    # restore files from the XFS partition without restoring the disk
    target = tmp_path / "out"
    res = json.loads(cli("restore", "files", snap["id"], "/data/ledger.csv", "--partition", "2", "--target",
                         str(target), "--vault", str(vault), "--json").stdout)
    assert res["files"] == 1 and (target / "data" / "ledger.csv").read_bytes() == files["p2/data/ledger.csv"]
    p = cli("restore", "files", snap["id"], "/etc/hosts", "--vault", str(vault), "--target", str(target),
            check=False)
    assert p.returncode == 5 and "choose a partition with --partition" in p.stderr and "3 (ntfs)" in p.stderr
    assert mounts_below(Path("/tmp")) == [] or all("dobaas-image-" not in m for m in mounts_below(Path("/tmp")))


@pytest.mark.kvm
def test_one_file_out_of_a_kvm_snapshot_partition(tmp_path: Path, cli: Cli, domains) -> None:  # type: ignore[no-untyped-def]
    """`restore files SNAP --item vda --partition 1 /etc/hosts`: the file of the ext4 partition of a KVM domain's
    backed-up disk, equal to the original, with its mode; nothing else restored, nothing left mounted."""
    disk = tmp_path / "vda.raw"
    files = partitioned_disk(disk, tmp_path)
    dom = domains.create("dbs-files", {"vda": disk.stat().st_size}, start=False, content={"vda": str(disk)})
    vault = tmp_path / "vault"
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    policy = tmp_path / "policy.yaml"
    import yaml

    policy.write_text(yaml.safe_dump({"policy": "vms", "client": "acme", "vault": str(vault), "sources": [
        {"name": "vms", "plugin": "kvm", "uri": "qemu:///system", "domains": [dom.name],
         "work_dir": str(Path(domains.root) / "work")}]}))
    assert json.loads(cli("run", str(policy), "--json").stdout)["exit_code"] == 0
    snap = json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout)[0]
    target = tmp_path / "out"
    res = json.loads(cli("restore", "files", snap["id"], "/etc/hosts", "--item", "vda", "--partition", "1",
                         "--target", str(target), "--vault", str(vault), "--json").stdout)
    assert res["files"] == 1 and res["status"] == "ok", res
    assert (target / "etc" / "hosts").read_bytes() == files["p1/etc/hosts"]
    assert stat.S_IMODE(os.stat(target / "etc" / "hosts").st_mode) == 0o640
    assert sorted(os.listdir(target)) == ["etc"]
    with open("/proc/self/mountinfo") as f:
        assert "dobaas-image-" not in f.read()
    # the export of the same snapshot: qcow2 disk and the domain's XML
    out = tmp_path / "export"
    cli("export", snap["id"], "--vault", str(vault), "--output", str(out))
    (q,) = out.rglob("vda.qcow2")
    assert subprocess.run(["qemu-img", "compare", "-q", str(q), str(disk)]).returncode == 0
    assert f"<name>{dom.name}</name>" in next(out.rglob("domain.xml")).read_text()
