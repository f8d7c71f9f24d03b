"""Restore a Hyper-V snapshot as a new VM: each disk (written and checked by the core as a raw file) becomes a
dynamic VHDX, is uploaded to the share behind the target directory, read back over SMB and compared block by
block; then the VM is created from the saved configuration (new Id, network adapters disconnected unless asked)
and, with --start, seen running. Any failure removes what was made."""

from __future__ import annotations

import hashlib
import ntpath
import os
import shutil
import subprocess
import time

from orchestrator.plugin.base import MachineRestoreOptions
from orchestrator.plugin.errors import DobaasError, IntegrityError, StorageFull, UsageError
from orchestrator.plugin.secret import read_secret
from orchestrator.plugin.smb import SmbFiles, host_to_url
from orchestrator.plugin.windows.channel import WindowsAccess, WinRmChannel
from orchestrator.plugin.windows.host import restore_access
from orchestrator.plugin.windows.scripts import Script
from plugins.hyperv.vhdx import VhdxReader

COMPARE = 1024 * 1024


def _script(name: str) -> Script:
    return Script.load("plugins.hyperv", name)


def _access(meta: dict, options: MachineRestoreOptions) -> tuple[WindowsAccess, SmbFiles]:
    a = meta.get("access") or {}
    access = restore_access(a, options, f"the Hyper-V host {a.get('host')}")
    user, password = access.user, access.password
    s_user = a.get("storage_user") or user
    s_pw = read_secret(a.get("storage_password_env"), a.get("storage_password_file"), "storage",
                       "password") if (a.get("storage_password_env") or a.get("storage_password_file")) else password
    return access, SmbFiles(s_user, s_pw or "")


def _target_dir(meta: dict, options: MachineRestoreOptions) -> str:
    """The host directory of the new disks: --target-dir, else beside the original's first disk."""
    if options.get("target_dir"):
        return str(options["target_dir"])
    first = next(iter(meta["disks"].values()))["path"]
    return ntpath.join(ntpath.dirname(first), options["name"])


def check(meta: dict, options: MachineRestoreOptions) -> None:
    if shutil.which("qemu-img") is None:
        raise DobaasError("qemu-img is needed to write VHDX disks (Debian: apt-get install qemu-utils)")
    access, files = _access(meta, options)
    target = _target_dir(meta, options)
    host_to_url(target, meta["storage"])  # the directory must be reachable over SMB
    files.close()
    t = WinRmChannel(access).run(_script("Test-DobaasRestoreTarget.ps1"), {"Name": options["name"],
                                                                           "Directory": target}, idempotent=True)
    if t["NameTaken"]:
        raise UsageError(f"{access.host}: a VM named {options['name']} already exists")
    need = sum(int(d["size"]) for d in meta["disks"].values())
    if t["FreeBytes"] is not None and int(t["FreeBytes"]) < need:
        raise StorageFull(f"{access.host}: {target} has {int(t['FreeBytes']) >> 20} MiB free, the disks need up to "
                          f"{need >> 20} MiB")


def make_vm(meta: dict, disk_files: dict[str, str], options: MachineRestoreOptions) -> dict:
    access, files = _access(meta, options)
    channel = WinRmChannel(access)
    target = _target_dir(meta, options)
    uploaded: list[str] = []
    t0 = time.monotonic()
    try:
        files.makedirs(host_to_url(target, meta["storage"]))
        paths: dict[str, str] = {}
        for key in sorted(disk_files, key=_slot_order):
            host_path = ntpath.join(target, f"{options['name']}-{key.replace(':', '_')}.vhdx")
            url = host_to_url(host_path, meta["storage"])
            if files.exists(url):
                raise UsageError(f"{host_path} already exists on the host; choose another --target-dir or name")
            _upload_vhdx(disk_files[key], url, files, uploaded)
            _compare(disk_files[key], host_path, meta["storage"], files)
            paths[key] = host_path
        vm = meta["vm"]
        made = channel.run(_script("New-DobaasRestoredVm.ps1"), {
            "Name": options["name"], "Generation": int(vm["Generation"]), "ProcessorCount": int(vm["ProcessorCount"]),
            "MemoryStartupBytes": int(vm["MemoryStartupBytes"]), "SecureBoot": bool(vm.get("SecureBoot")),
            "DiskPaths": [paths[k] for k in sorted(paths, key=_slot_order)],
            "Switches": [n.get("SwitchName") or "" for n in vm.get("NetworkAdapters") or []],
            "Connect": bool(options.get("connect")), "Start": bool(options.get("start"))})
    except BaseException:
        for url in uploaded:
            try:
                files.remove(url)
            except Exception:
                pass
        raise
    finally:
        files.close()
    nics = vm.get("NetworkAdapters") or []
    return {"domain": made["Name"], "vm_id": made["Id"], "host": access.host, "disks": paths, "state": made["State"],
            "nics": f"{len(nics)} adapter(s) " + ("connected to their switches" if options.get("connect")
                                                   else "created disconnected (use --connect)"),
            "upload_seconds": round(time.monotonic() - t0, 3)}


def _slot_order(key: str) -> tuple:
    """Controller order: IDE before SCSI, then number and location (the boot disk first)."""
    kind = 0 if key.startswith("ide") else 1
    num, _, loc = key.lstrip("abcdefghijklmnopqrstuvwxyz").partition(":")
    return kind, int(num or 0), int(loc or 0)


def _upload_vhdx(raw: str, url: str, files: SmbFiles, uploaded: list[str]) -> None:
    """raw -> dynamic VHDX (holes stay unallocated) -> the share."""
    vhdx = raw + ".vhdx"
    try:
        p = subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", raw,
                            vhdx], capture_output=True, text=True)
        if p.returncode != 0:
            raise DobaasError(f"qemu-img could not write the VHDX: {p.stderr.strip()[-300:]}")
        with open(vhdx, "rb") as src:
            dst = files.open_write(url)
            uploaded.append(url)
            try:
                while chunk := src.read(4 * 1024 * 1024):
                    dst.write(chunk)
            finally:
                dst.close()
    finally:
        if os.path.exists(vhdx):
            os.unlink(vhdx)


def _compare(raw: str, host_path: str, storage: dict[str, str], files: SmbFiles) -> None:
    """Read the uploaded VHDX back over SMB and compare it with the checked raw disk, 1 MiB at a time."""
    reader = VhdxReader(host_path, lambda p: files.open_read(host_to_url(p, storage)))
    try:
        size = os.path.getsize(raw)
        if reader.size != size:
            raise IntegrityError(f"{host_path}: the uploaded disk is {reader.size} bytes, the snapshot's {size}")
        buf = bytearray(COMPARE)
        with open(raw, "rb") as f:
            for off in range(0, size, COMPARE):
                want = f.read(COMPARE)
                n = reader.readinto(off, memoryview(buf)[: len(want)])
                if hashlib.sha256(buf[:n]).digest() != hashlib.sha256(want).digest():
                    raise IntegrityError(f"{host_path}: the uploaded disk differs from the snapshot at offset {off}")
    finally:
        reader.close()


