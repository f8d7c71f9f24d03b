"""The per-domain directory that holds the NBD socket and scratch files: QEMU (user libvirt-qemu on Debian)
must be able to create files there, and a pid file says which dobaas process owns a running backup job."""

from __future__ import annotations

import os
import pwd
import re


def qemu_user() -> pwd.struct_passwd | None:
    """The user QEMU runs as (qemu.conf ``user =``, else Debian's libvirt-qemu), None if unknown here."""
    name = "libvirt-qemu"
    try:
        with open("/etc/libvirt/qemu.conf", encoding="utf-8") as f:
            m = re.search(r'^\s*user\s*=\s*"([^"]+)"', f.read(), re.M)
            if m:
                name = m.group(1)
    except OSError:
        pass
    try:
        return pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        return None


def domain_dir(root: str, uuid: str) -> str:
    """Create (if needed) ``root/uuid`` owned by the QEMU user, with parents QEMU can traverse."""
    os.makedirs(root, mode=0o711, exist_ok=True)
    path = os.path.join(root, uuid)
    os.makedirs(path, mode=0o700, exist_ok=True)
    user = qemu_user()
    if user is not None and os.geteuid() == 0:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def owner_pid(path: str) -> int | None:
    try:
        with open(os.path.join(path, "owner.pid"), encoding="ascii") as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(path: str) -> None:
    tmp = os.path.join(path, f"owner.pid.{os.getpid()}")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(path, "owner.pid"))


def release(path: str) -> None:
    for name in ("owner.pid", "nbd.sock"):
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
