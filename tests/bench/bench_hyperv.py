"""Hyper-V benchmark: a VM with a 4 GiB dynamic VHDX (40% never written) behind the WS-Man double, on the real
Samba share; 0.5% of the disk written in scattered 64 KiB places between two backups (recorded by the model's
RCT). Reports wall time and bytes read of the full and the incremental capture (VHDX read over SMB with
libvhdi, only the RCT ranges the second time), and restic backing up the same VHDX file from a local path in
the same run (what a file-level tool must do: read the whole file).

The double answers on loopback and the share is local: the figures measure our side (WinRM calls, SMB reads,
the vault), not a real host's disks. Targets: incremental >= 5x faster than restic, reading <= 2x the changed
bytes. Run with ``make bench``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orchestrator.demo.imagegen import make_image
from tests.bench.bench_image import PASS, bench_setup, du, print_vm_table, restic_env, run, run_rss, scattered_writes
from tests.hyperv_model import RCT_GRANULE, HypervModel
from tests.samba import run_samba
from tests.wsman import start

MiB = 2**20
BLOCK = 64 * 1024
USER, PASSWORD = "ACME\\backup", "Hv-bench-pass-1"
SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "plugins",
                       "hyperv", "scripts")


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--size", type=int, default=4096, help="disk size in MiB")
        ap.add_argument("--fraction", type=float, default=0.005, help="share of the disk written between backups")

    args, work, dobaas, restic = bench_setup(".bench-hyperv", add_args)
    size = args.size * MiB
    from pathlib import Path

    double, stop = start({USER: PASSWORD}, [Path(SCRIPTS)])
    res: dict[str, dict] = {}
    try:
        with run_samba() as smb:
            model, folder = HypervModel.on_share(smb.share_dir, double)
            vm = model.add_vm("bench-vm", [args.size])
            disk = vm.disks[0]
            raw = os.path.join(work, "disk.raw")
            make_image(raw, size)  # 40% holes, 30% text, 30% random, sparse
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", raw,
                            disk.local], check=True)
            os.unlink(raw)
            env = {"DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": f"sqlite:///{work}/catalog.db",
                   "HV_PASSWORD": PASSWORD, "HV_SMB_PASSWORD": smb.password}
            vault = os.path.join(work, "vault")
            run([dobaas, "vault", "init", vault], env)
            policy = os.path.join(work, "hyperv.yaml")
            with open(policy, "w") as f:
                json.dump({"policy": "bench", "client": "bench", "vault": vault, "sources": [{
                    "name": "hv", "plugin": "hyperv", "host": "127.0.0.1", "port": double.port, "user": USER,
                    "password_env": "HV_PASSWORD", "thumbprint": double.thumbprint, "vms": ["bench-vm"],
                    "storage": {"D:\\VMs": smb.url(folder)}, "storage_user": smb.user,
                    "storage_password_env": "HV_SMB_PASSWORD"}]}, f)
            renv = restic_env(work)
            run([restic, "init"], renv)

            def backup(tag: str) -> None:
                wall, rss, out = run_rss([dobaas, "run", policy, "--json"], env)
                src = json.loads(out)["sources"][0]
                assert src["status"] == "ok", src
                before = du(renv["RESTIC_REPOSITORY"])
                rwall, rrss, _ = run_rss([restic, "backup", "--quiet", disk.local], renv)
                res[tag] = {"seconds": wall, "bytes_read": src["bytes_read"], "rss": rss / 1024,
                            "restic_seconds": rwall, "restic_read": os.path.getsize(disk.local),
                            "restic_rss": rrss / 1024, "restic_growth": du(renv["RESTIC_REPOSITORY"]) - before}

            backup("full")
            commands: list[str] = []
            _count, blocks = scattered_writes(size, args.fraction, BLOCK, lambda off, fill: commands.append(
                f"write -P {fill} {off} {BLOCK}"))
            _guest_writes(model, vm, commands)
            vsize = du(vault)
            backup("incremental")
            growth = du(vault) - vsize
    finally:
        stop()
    incr = res["incremental"]
    print(f"# Hyper-V benchmark: {args.size} MiB dynamic VHDX over SMB, {args.fraction:.1%} written between backups, "
          f"2 cores")
    print_vm_table(res, growth)
    changed = len({b * BLOCK // RCT_GRANULE for b in blocks}) * RCT_GRANULE
    speed = incr["restic_seconds"] / incr["seconds"]
    ok_speed, ok_read = speed >= 5, incr["bytes_read"] <= 2 * changed
    print(f"{'MET ' if ok_speed else 'MISS'} incremental >= 5x faster than restic reading the VHDX: {speed:.1f}x")
    print(f"{'MET ' if ok_read else 'MISS'} incremental read <= 2x the changed bytes: {incr['bytes_read']} bytes "
          f"(changed, in 64 KiB granules: {changed})")
    return 0 if ok_speed and ok_read else 1


def _guest_writes(model: HypervModel, vm, commands: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The guest's writes, many per qemu-io call, each recorded for RCT."""
    disk = vm.disks[0]
    for i in range(0, len(commands), 200):
        batch = commands[i : i + 200]
        cmd = ["qemu-io", "-f", "vhdx"]
        for c in batch:
            cmd += ["-c", c]
        subprocess.run([*cmd, disk.local], check=True, capture_output=True)
        for c in batch:
            _w, _p, _fill, off, n = c.split()
            disk.seq += 1
            disk.writes.append((disk.seq, int(off), int(n)))


if __name__ == "__main__":
    sys.exit(main())
