"""S3 vault benchmark: the benchmark image backed up to a local vault and to an S3 vault on a real SeaweedFS
server over loopback, restic's s3 backend on the same server and image in the same run, and a restore from S3.

Run with ``make bench``. Not part of the test suite."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orchestrator.demo.imagegen import make_image
from tests.bench.bench_image import PASS, bench_setup, restic_env, run, run_rss
from tests.s3server import PROVIDER, start_s3

MiB = 2**20


def stored(s3, bucket: str) -> int:
    return sum(o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
               for o in page.get("Contents", []))


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--size", type=int, default=2048, help="image size in MiB")

    args, work, dobaas, restic = bench_setup(".bench-s3", add_args)
    img = os.path.join(work, "disk.img")
    make_image(img, args.size * MiB)
    server = start_s3(tempfile.mkdtemp(prefix="dobaas-bench-s3-", dir=work))
    try:
        s3 = server.client()
        for b in ("dobaas-bench", "restic-bench"):
            s3.create_bucket(Bucket=b)
        s3.put_object(Bucket="dobaas-bench", Key="warm", Body=os.urandom(8 * MiB))  # storage set up before timing
        env = {"DOBAAS_PASSPHRASE": PASS, **server.env(PROVIDER)}
        local = os.path.join(work, "vault")
        url = "s3://dobaas-bench/vault"
        run([dobaas, "vault", "init", local], env)
        run([dobaas, "vault", "init", url], env)
        res = {}
        wall, rss, out = run_rss([dobaas, "backup", "image", img, "--vault", local, "--name", "img", "--json"], env)
        res["local"] = (wall, json.loads(out)["bytes_stored"], rss)
        wall, rss, out = run_rss([dobaas, "backup", "image", img, "--vault", url, "--name", "img", "--json"], env)
        res["s3"] = (wall, stored(s3, "dobaas-bench"), rss)
        renv = {**restic_env(work, f"s3:{server.endpoint}/restic-bench/r"), "AWS_ACCESS_KEY_ID": PROVIDER[0],
                "AWS_SECRET_ACCESS_KEY": PROVIDER[1]}
        run([restic, "init"], renv)
        wall, rss, _ = run_rss([restic, "backup", "--quiet", img], renv)
        res["restic s3"] = (wall, stored(s3, "restic-bench"), rss)
        snap = json.loads(run([dobaas, "snapshots", "--vault", url, "--json"], env)[2])[-1]["id"]
        out_img = os.path.join(work, "restored.img")
        wall, rss, _ = run_rss([dobaas, "restore", "image", snap, "--vault", url, "--output", out_img], env)
        res["s3 restore"] = (wall, 0, rss)
        os.unlink(out_img)
        rdir = os.path.join(work, "restic-out")
        wall, rss, _ = run_rss([restic, "restore", "latest", "--target", rdir], renv)
        res["restic restore"] = (wall, 0, rss)
    finally:
        server.stop()

    print(f"# S3 vault benchmark: {args.size} MiB image, SeaweedFS 4.48 over loopback, {os.cpu_count()} cores")
    print(f"{'target':15} {'seconds':>8} {'MiB/s':>7} {'stored MiB':>11} {'RSS MiB':>8}")
    for k, (wall, size, rss) in res.items():
        print(f"{k:15} {wall:8.2f} {args.size / wall:7.0f} {size / MiB:11.1f} {rss / 1024:8.0f}")
    backup = res["restic s3"][0] / res["s3"][0]
    restore = res["restic restore"][0] / res["s3 restore"][0]
    print(f"S3 full backup at {100 * res['local'][0] / res['s3'][0]:.0f}% of the local throughput")
    verdict = "MET " if backup >= 2 else "MISS"
    print(f"{verdict} dobaas over S3 vs restic over S3, full backup: {backup:.2f}x (target 2x)")
    print(f"dobaas vs restic, restore from S3: {restore:.2f}x")
    return 0 if backup >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
