"""VMware benchmark against govmomi's vSphere simulator (the test suite's build, with CBT added): a VM with a
4 GiB thin disk (40% never written), 0.2% of it written in scattered places between two backups. Reports wall
time and bytes read of the full and the incremental capture (CBT areas, datastore HTTP Range reads), and restic
backing up the same flat extent file in the same run (what a file-level tool reading the datastore must do).

The simulator serves /folder from local files on loopback: the figures measure our side (API calls, CBT
queries, HTTPS reads, the vault), not a real ESXi's datastore throughput. Each QueryChangedDiskAreas answer
covers 1 GiB of the disk here (how much a real host covers per answer varies). Run with ``make bench``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orchestrator.demo.imagegen import make_image
from tests.bench.bench_image import PASS, bench_setup, du, print_vm_table, restic_env, run, run_rss, scattered_writes
from tests.vcsim import make_vm, start, stop

MiB = 2**20
BLOCK = 64 * 1024


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--size", type=int, default=4096, help="disk size in MiB")
        ap.add_argument("--fraction", type=float, default=0.002, help="share of the disk written between backups")

    args, work, dobaas, restic = bench_setup(".bench-vmware", add_args)
    size = args.size * MiB
    sim = start("vpx", cbt_window=1 << 30)  # each QueryChangedDiskAreas answer covers 1 GiB
    env = {"DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": f"sqlite:///{work}/catalog.db",
           "VCSIM_PASSWORD": sim.password}
    renv = restic_env(work)
    try:
        si = sim.connect()
        vm = make_vm(sim, si, "bench-vm", [args.size])
        flat = vm.flat("scsi0:0")
        make_image(flat, size)  # 40% holes, 30% text, 30% random, sparse
        with open(flat, "rb") as f:  # what the guest wrote, as CBT's "*" reports it: the file's data areas
            areas, pos = [], 0
            while pos < size:
                try:
                    start_ = os.lseek(f.fileno(), pos, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(f.fileno(), start_, os.SEEK_HOLE)
                areas.append([start_, end - start_])
                pos = end
        with open(flat + ".cbt.json", "w") as f:
            json.dump({"epoch": "initial", "changes": areas}, f)
        print(f"# vmware benchmark: vSphere simulator (VPX), {args.size} MiB thin disk "
              f"({os.stat(flat).st_blocks * 512 / MiB:.0f} MiB allocated), {args.fraction:.1%} scattered writes, "
              f"{os.cpu_count()} cores")
        vault = os.path.join(work, "vault")
        run([dobaas, "vault", "init", vault], env)
        policy = os.path.join(work, "vmware.yaml")
        with open(policy, "w") as f:
            json.dump({"policy": "bench", "client": "bench", "vault": vault,
                       "sources": [sim.source(["bench-vm"], quiesce=True)]}, f)
        run([restic, "init"], renv)
        res: dict[str, dict] = {}

        def backup(tag: str) -> None:
            wall, rss, out = run_rss([dobaas, "run", policy, "--json"], env)
            src = json.loads(out)["sources"][0]
            assert src["status"] == "ok", src
            before = du(renv["RESTIC_REPOSITORY"])
            rwall, rrss, _ = run_rss([restic, "backup", "--quiet", flat], renv)
            res[tag] = {"seconds": wall, "bytes_read": src["bytes_read"], "rss": rss / 1024, "restic_seconds": rwall,
                        "restic_read": os.path.getsize(flat), "restic_rss": rrss / 1024,
                        "restic_growth": du(renv["RESTIC_REPOSITORY"]) - before}

        backup("full")
        _count, blocks = scattered_writes(size, args.fraction, BLOCK,
                                          lambda off, fill: vm.write("scsi0:0", off, bytes([fill]) * BLOCK))
        vsize = du(vault)
        backup("incremental")
        growth = du(vault) - vsize
    finally:
        stop(sim)

    inv = inventory_bench()
    incr = res["incremental"]
    print()
    print_vm_table(res, growth)
    print(f"inventory of {inv['vms']} VMs: {inv['retrieval']:.2f} s with PropertyCollector retrievals; reading the "
          f"same 3 properties VM by VM: {inv['naive']:.2f} s ({inv['naive'] / inv['retrieval']:.0f}x slower)")
    expected = len(blocks) * BLOCK
    ok_read = incr["bytes_read"] == expected
    print(f"{'MET ' if ok_read else 'MISS'} incremental read exactly the changed 64 KiB blocks: {incr['bytes_read']} "
          f"bytes (expected {expected})")
    return 0 if ok_read else 1


def inventory_bench(per_pool: int = 1000) -> dict:
    """Listing a large vCenter: our retrievals against the naive property-by-property reads."""
    from plugins.vmware.connection import connect
    from plugins.vmware.inventory import list_vms
    from plugins.vmware.tls import TlsTrust, normalize_thumbprint

    sim = start("vpx", machines=per_pool)
    try:
        session = connect(sim.host, "backup@vsphere.local", sim.password, TlsTrust(None, normalize_thumbprint(
            sim.thumbprint)))
        t = time.monotonic()
        vms = list_vms(session)
        retrieval = time.monotonic() - t
        content = session.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [type(vms[0].ref)], True)
        t = time.monotonic()
        for vm in view.view:
            _ = (vm.name, vm.runtime.powerState, vm.config.changeTrackingEnabled)
        naive = time.monotonic() - t
        session.close()
        return {"vms": len(vms), "retrieval": retrieval, "naive": naive}
    finally:
        stop(sim)


if __name__ == "__main__":
    sys.exit(main())
