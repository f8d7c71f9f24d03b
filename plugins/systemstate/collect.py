"""Collect the machine's state into plain files: packages, partition tables, mounts, block devices, network,
boot and kernel facts, with a MANIFEST that says what each file is and how to use it in a rebuild."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

TIMEOUT = 60


@dataclass
class Collected:
    name: str
    description: str
    ok: bool
    note: str = ""


def _run(cmd: list[str]) -> tuple[bool, str]:
    if not shutil.which(cmd[0]):
        return False, f"{cmd[0]} is not installed on this host\n"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(cmd)} did not finish within {TIMEOUT} s\n"
    if p.returncode != 0:
        return False, f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}\n{p.stdout}"
    return True, p.stdout


def _disks() -> list[str]:
    ok, out = _run(["lsblk", "-J", "-d", "-o", "NAME,TYPE"])
    if not ok:
        return []
    try:
        return [f"/dev/{d['name']}" for d in json.loads(out)["blockdevices"] if d.get("type") == "disk"]
    except (ValueError, KeyError):
        return []


COMMANDS: list[tuple[str, list[str], str]] = [
    ("packages.tsv", ["dpkg-query", "-W", "-f", "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Abbrev}\\n"],
     "installed Debian packages (reinstall: cut -f1 | xargs apt-get install)"),
    ("packages-manual.txt", ["apt-mark", "showmanual"], "packages installed on purpose (not as dependencies)"),
    ("block-devices.json", ["lsblk", "-J", "-O"], "disks, partitions, file systems, sizes, UUIDs, mount points"),
    ("mounts.txt", ["findmnt", "-l", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS"], "what is mounted where, with options"),
    ("blkid.txt", ["blkid"], "file system UUIDs and labels (match them in /etc/fstab)"),
    ("network-addresses.txt", ["ip", "-d", "address"], "network interfaces and addresses"),
    ("network-routes.txt", ["ip", "route", "show", "table", "all"], "routing tables"),
    ("kernel.txt", ["uname", "-a"], "running kernel"),
    ("services-enabled.txt", ["systemctl", "list-unit-files", "--state=enabled", "--no-pager"],
     "services enabled at boot"),
]


def collect(dest: str) -> list[Collected]:
    """Write the state files into ``dest``; a command that fails is recorded in its file, never fatal."""
    out: list[Collected] = []
    for name, cmd, desc in COMMANDS:
        ok, text = _run(cmd)
        with open(os.path.join(dest, name), "w", encoding="utf-8") as f:
            f.write(text)
        out.append(Collected(name, desc, ok, "" if ok else text.splitlines()[0]))
    os.makedirs(os.path.join(dest, "partition-tables"), exist_ok=True)
    for disk in _disks():
        name = f"partition-tables/{os.path.basename(disk)}.sfdisk"
        ok, text = _run(["sfdisk", "-d", disk])
        with open(os.path.join(dest, name), "w", encoding="utf-8") as f:
            f.write(text)
        out.append(Collected(name, f"partition table of {disk} (restore: sfdisk {disk} < this file)", ok,
                             "" if ok else text.splitlines()[0]))
    for src, name, desc in (("/proc/mounts", "proc-mounts.txt", "kernel mount table"),
                            ("/proc/cmdline", "kernel-cmdline.txt", "kernel command line at boot")):
        try:
            shutil.copyfile(src, os.path.join(dest, name))
            out.append(Collected(name, desc, True))
        except OSError as e:
            out.append(Collected(name, desc, False, str(e)))
    return out


def write_manifest(dest: str, collected: list[Collected], trees: list[str]) -> None:
    lines = ["Do'BaaS system state — what was captured and how to use it to rebuild this host by hand", "",
             "Files in system-info/:"]
    for c in collected:
        lines.append(f"  {c.name:32} {c.description}" + ("" if c.ok else f"  [NOT CAPTURED: {c.note}]"))
    lines += ["", "Directory trees captured with their metadata (owners, modes, ACLs, xattrs):"]
    lines += [f"  {t}" for t in trees]
    lines += ["", "Rebuild outline:",
              "  1. partition the new disk from partition-tables/*.sfdisk; create file systems (block-devices.json",
              "     gives types, labels and UUIDs; blkid.txt too);",
              "  2. install the same Debian release, then the packages of packages-manual.txt;",
              "  3. restore /etc (and /boot/grub, crontabs) from this snapshot with `dobaas restore files`;",
              "  4. reinstall the boot loader, compare mounts.txt and services-enabled.txt, reboot."]
    with open(os.path.join(dest, "MANIFEST.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
