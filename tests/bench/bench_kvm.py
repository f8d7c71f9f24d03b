"""KVM benchmark: a running domain with a 4 GiB qcow2 disk on a real libvirt + QEMU; 0.2% of the disk written
in scattered places through QEMU between two backups. Reports wall time and bytes read of the full and the
incremental capture, and restic backing up the same qcow2 file (what a file-level tool must do: read all of it)
in the same run.

Run with ``make bench``. Not part of the test suite."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orchestrator.demo.imagegen import make_image
from tests.bench.bench_image import PASS, bench_setup, du, print_vm_table, restic_env, run, run_rss, scattered_writes
from tests.libvirt_env import Domains, Libvirt, virsh

MiB = 2**20
GRANULE = 64 * 1024


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--size", type=int, default=4096, help="disk size in MiB")
        ap.add_argument("--fraction", type=float, default=0.002, help="share of the disk written between backups")

    args, work, dobaas, restic = bench_setup(".bench-kvm", add_args)
    env = {"DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": f"sqlite:///{work}/catalog.db"}
    renv = restic_env(work)
    size = args.size * MiB
    lv = Libvirt()
    lv.start()
    domains = Domains()
    try:
        raw = os.path.join(domains.root, "seed.raw")
        make_image(raw, size)
        dom = domains.create("bench-kvm", {"vda": size}, content={"vda": raw})
        os.unlink(raw)
        qcow2 = dom.disks["vda"]
        print(f"# kvm benchmark: running TCG domain, {args.size} MiB qcow2 disk ({du(os.path.dirname(qcow2)) / MiB:.0f}"
              f" MiB allocated: 40% holes, 30% text, 30% random), {args.fraction:.1%} scattered writes, "
              f"{os.cpu_count()} cores")
        vault = os.path.join(work, "vault")
        run([dobaas, "vault", "init", vault], env)
        policy = os.path.join(work, "kvm.yaml")
        with open(policy, "w") as f:
            json.dump({"policy": "bench", "client": "bench", "vault": vault, "sources": [
                {"name": "vms", "plugin": "kvm", "domains": ["bench-kvm"], "work_dir": os.path.join(domains.root,
                                                                                                       "work")}]}, f)
        run([restic, "init"], renv)
        res: dict[str, dict] = {}

        def backup(tag: str) -> None:
            wall, rss, out = run_rss([dobaas, "run", policy, "--json"], env)
            src = json.loads(out)["sources"][0]
            assert src["status"] == "ok", src
            dom.flush("vda")
            before = du(renv["RESTIC_REPOSITORY"])
            rwall, rrss, _ = run_rss([restic, "backup", "--quiet", qcow2], renv)
            res[tag] = {"seconds": wall, "bytes_read": src["bytes_read"], "mode": src["mode"], "rss": rss / 1024,
                        "restic_seconds": rwall, "restic_read": os.path.getsize(qcow2), "restic_rss": rrss / 1024,
                        "restic_growth": du(renv["RESTIC_REPOSITORY"]) - before}

        backup("full")
        t0 = time.monotonic()
        count, granules = scattered_writes(size, args.fraction, GRANULE,
                                           lambda off, fill: dom.write("vda", off, GRANULE, fill))
        print(f"{count} writes of 64 KiB through QEMU in {time.monotonic() - t0:.1f} s "
              f"({len(granules) * GRANULE / MiB:.1f} MiB of 64 KiB granules dirty)")
        vsize = du(vault)
        backup("incremental")
        growth = du(vault) - vsize
    finally:
        virsh("destroy", "bench-kvm", check=False)
        domains.cleanup()
        lv.stop()

    incr = res["incremental"]
    print()
    print_vm_table(res, growth)
    expected = len(granules) * GRANULE
    ok_read = incr["bytes_read"] == expected
    print(f"{'MET ' if ok_read else 'MISS'} incremental read exactly the dirty granules: {incr['bytes_read']} bytes "
          f"(expected {expected})")
    print(f"incremental vs restic on the qcow2 file: {incr['restic_seconds'] / incr['seconds']:.1f}x faster, "
          f"{incr['restic_read'] / max(1, incr['bytes_read']):.0f}x fewer bytes read")
    return 0 if ok_read else 1


if __name__ == "__main__":
    sys.exit(main())
