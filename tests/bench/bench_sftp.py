"""Remote vault benchmark: the 2 GiB benchmark image backed up to a local vault and to an SFTP vault on a real
OpenSSH server over loopback (chrooted, append-only tenant), and restic's sftp backend on the same image in the
same run.

Run with ``make bench``. Not part of the test suite."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orchestrator.demo.imagegen import make_image
from tests.bench.bench_image import PASS, bench_setup, du, restic_env, run, run_rss
from tests.sshd import start_sshd, stop_sshd

MiB = 2**20


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--size", type=int, default=2048, help="image size in MiB")

    args, work, dobaas, restic = bench_setup(".bench-sftp", add_args)
    img = os.path.join(work, "disk.img")
    make_image(img, args.size * MiB)
    sshd = start_sshd(["dobaas", "restic"], unrestricted=("restic",))
    try:
        env = {"DOBAAS_PASSPHRASE": PASS, **sshd.env("dobaas")}
        local = os.path.join(work, "vault")
        run([dobaas, "vault", "init", local], env)
        remote_repo = sshd.tenants["dobaas"].repo
        run([dobaas, "vault", "init", remote_repo], env)
        sshd.give_to("dobaas")
        shutil.chown(sshd.tenants["restic"].repo, sshd.tenants["restic"].user, sshd.tenants["restic"].user)
        res = {}
        wall, rss, out = run_rss([dobaas, "backup", "image", img, "--vault", local, "--name", "img", "--json"], env)
        res["local"] = (wall, json.loads(out)["bytes_stored"], rss)
        wall, rss, out = run_rss([dobaas, "backup", "image", img, "--vault", sshd.url("dobaas"), "--name", "img",
                                  "--json"], env)
        res["sftp"] = (wall, json.loads(out)["bytes_stored"], rss)
        t = sshd.tenants["restic"]
        ssh = (f"ssh -p {sshd.port} -i {t.key} -o UserKnownHostsFile={sshd.known_hosts} -o StrictHostKeyChecking=yes "
               f"-o IdentitiesOnly=yes {t.user}@127.0.0.1 -s sftp")
        renv = restic_env(work, "sftp:restic-bench:/repo/r")
        rargs = ["-o", f"sftp.command={ssh}"]
        run([restic, *rargs, "init"], renv)
        wall, rss, _ = run_rss([restic, *rargs, "backup", "--quiet", img], renv)
        res["restic sftp"] = (wall, du(os.path.join(t.repo, "r")), rss)
    finally:
        stop_sshd(sshd)

    print(f"# remote vault benchmark: {args.size} MiB image, OpenSSH over loopback, {os.cpu_count()} cores")
    print(f"{'target':14} {'seconds':>8} {'MiB/s':>7} {'stored MiB':>11} {'RSS MiB':>8}")
    for k, (wall, stored, rss) in res.items():
        print(f"{k:14} {wall:8.2f} {args.size / wall:7.0f} {stored / MiB:11.1f} {rss / 1024:8.0f}")
    ratio = res["local"][0] / res["sftp"][0]
    met = ratio >= 0.5
    print(f"{'MET ' if met else 'MISS'} SFTP full backup at >= 50% of the local throughput: {100 * ratio:.0f}%")
    print(f"dobaas over SFTP vs restic over SFTP: {res['restic sftp'][0] / res['sftp'][0]:.2f}x faster")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
