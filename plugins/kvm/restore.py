"""A KVM snapshot made into a new domain: disks converted to the chosen format and checked (qemu-img compare),
the saved XML given a new name, UUID, MAC addresses and disk paths, then defined and optionally started; a
start counts only when the domain is seen running."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from orchestrator.plugin.base import MachineRestoreOptions
from orchestrator.plugin.errors import DobaasError, UsageError
from plugins.kvm.connection import connect, libvirt_module
from plugins.kvm.domxml import for_restore

RUNNING_TIMEOUT = 60.0



def target_dir(options: MachineRestoreOptions) -> str:
    """Where the restored disks live: --target-dir, or libvirt's default storage pool."""
    return os.path.abspath(options.get("target_dir") or "/var/lib/libvirt/images")

def final_path(options: MachineRestoreOptions, target: str) -> str:
    ext = "qcow2" if options["format"] == "qcow2" else "img"
    return os.path.join(target_dir(options), f"{options['name']}-{target}.{ext}")


def check(meta: dict, options: MachineRestoreOptions) -> None:
    if options["format"] not in ("qcow2", "raw"):
        raise UsageError(f"format {options['format']!r}: choose qcow2 or raw")
    libvirt = libvirt_module()
    uri = options.get("uri") or meta.get("uri") or "qemu:///system"
    conn = connect(uri)
    try:
        conn.lookupByName(options["name"])
        raise UsageError(f"a domain named {options['name']!r} already exists on {uri}; choose another --as")
    except libvirt.libvirtError:
        pass
    for target in meta.get("disks", {}):
        for path in (final_path(options, target), os.path.join(target_dir(options),
                                                                f"{options['name']}-{target}.raw")):
            if os.path.exists(path):
                raise UsageError(f"{path} already exists; choose another --target-dir or --as")


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise DobaasError(f"{what}: {p.stderr.strip() or p.stdout.strip()}")


def make_domain(meta: dict, raw_files: dict[str, str], options: MachineRestoreOptions) -> dict:
    libvirt = libvirt_module()
    uri = options.get("uri") or meta.get("uri") or "qemu:///system"
    disks: dict[str, tuple[str, str]] = {}
    made: list[str] = []
    try:
        for target, raw in raw_files.items():
            path = final_path(options, target)
            if options["format"] == "qcow2":
                _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path], f"converting disk {target}")
                made.append(path)
                _run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, path],
                     f"disk {target}: the qcow2 image differs from the restored data")
                os.unlink(raw)
            else:
                os.rename(raw, path)
                made.append(path)
            disks[target] = (path, options["format"])
        xml = for_restore(meta["domain_xml"], options["name"], disks)
        conn = connect(uri)
        try:
            dom = conn.defineXML(xml)
        except libvirt.libvirtError as e:
            raise DobaasError(f"libvirt refused the restored domain: {e.get_error_message()}") from None
    except BaseException:
        for p in made:
            if os.path.exists(p):
                os.unlink(p)
        raise
    state = "defined (shut off)"
    if options.get("start"):
        try:
            dom.create()
        except libvirt.libvirtError as e:
            raise DobaasError(f"domain {options['name']} was defined but did not start: "
                              f"{e.get_error_message()}") from None
        state = _wait_running(dom)
    return {"domain": options["name"], "uuid": dom.UUIDString(), "uri": uri, "state": state,
            "disks": {t: p for t, (p, _f) in disks.items()}, "format": options["format"]}


def _wait_running(dom: Any) -> str:
    libvirt = libvirt_module()
    deadline = time.monotonic() + RUNNING_TIMEOUT
    while time.monotonic() < deadline:
        st, _reason = dom.state(0)
        if st == libvirt.VIR_DOMAIN_RUNNING:
            return "running"
        if st in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
            raise DobaasError(f"domain {dom.name()} stopped right after starting (state {st})")
        time.sleep(0.2)
    raise DobaasError(f"domain {dom.name()} did not reach the running state within {RUNNING_TIMEOUT:.0f} s")
