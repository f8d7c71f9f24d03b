"""Index-at-scale benchmark: a vault whose index objects describe 50 million chunks (about 3 TB at 64 KiB; the
index objects are written, the packs they name are not), then a backup of an image into it: the first one
builds the local sorted table (diskindex), the next ones use it. Peak RSS and time of each, and the same backup
into an empty vault for the throughput comparison.

Run with ``make bench``. Not part of the test suite."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

from orchestrator.demo.imagegen import make_image
from orchestrator.vault.backend.local import LocalBackend
from orchestrator.vault.crypto import AAD_INDEX, content_hash
from orchestrator.vault.diskindex import dtypes
from orchestrator.vault.index import INDEX_MAGIC, PACK_REC
from orchestrator.vault.repository import Vault
from tests.bench.bench_image import PASS, bench_setup, run, run_rss

MiB = 2**20
PER_OBJECT = 250_000  # entries per simulated index object (one nightly backup's worth)
PER_PACK = 250  # a 16 MiB pack of 64 KiB chunks


def simulate(vault_dir: str, chunks: int) -> float:
    """Write index objects describing ``chunks`` random chunks in packs that are not stored."""
    t0 = time.monotonic()
    vault = Vault.open(LocalBackend(vault_dir), PASS)
    rng = np.random.default_rng(7)
    entry_dt = dtypes()[0]
    written = 0
    while written < chunks:
        n = min(PER_OBJECT, chunks - written)
        e = np.zeros(n, entry_dt)
        ids = rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)
        for i, k in enumerate(("k0", "k1", "k2", "k3")):
            e[k] = ids[:, i]
        e["kind"], e["comp"] = 0, 1
        e["offset"] = (np.arange(n) % PER_PACK) * 66_000
        e["length"], e["raw"] = 40_000, 65_536
        table = e.tobytes()
        parts = [INDEX_MAGIC]
        for start in range(0, n, PER_PACK):
            count = min(PER_PACK, n - start)
            parts.append(PACK_REC.pack(os.urandom(32), count))
            parts.append(table[start * entry_dt.itemsize:(start + count) * entry_dt.itemsize])
        sealed = vault.cipher.seal(b"".join(parts), AAD_INDEX)
        vault.backend.put("index/" + content_hash(sealed), sealed)
        written += n
    return time.monotonic() - t0


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--chunks", type=int, default=50_000_000, help="chunks the simulated index describes")
        ap.add_argument("--size", type=int, default=1024, help="image size in MiB")

    args, work, dobaas, _restic = bench_setup(".bench-index", add_args)
    env = {"DOBAAS_PASSPHRASE": PASS, "DOBAAS_CACHE_DIR": os.path.join(work, "cache")}
    big, empty = os.path.join(work, "big"), os.path.join(work, "empty")
    for v in (big, empty):
        run([dobaas, "vault", "init", v, "--kdf-cost", "12"], env)
    gen = simulate(big, args.chunks)
    images = []
    for seed in (1, 2, 3):
        img = os.path.join(work, f"disk{seed}.img")
        make_image(img, args.size * MiB, seed=seed)
        images.append(img)
    res = {}
    wall, rss, out = run_rss([dobaas, "backup", "image", images[0], "--vault", empty, "--name", "a", "--json"], env)
    res["empty vault"] = (wall, rss, json.loads(out)["chunks_new"])
    millions = f"{args.chunks / 1e6:g}M"
    built, ready_label = f"{millions}, table built", f"{millions}, table ready"
    for label, img in ((built, images[1]), (ready_label, images[2])):
        wall, rss, out = run_rss([dobaas, "backup", "image", img, "--vault", big, "--name", label, "--json"], env)
        res[label] = (wall, rss, json.loads(out)["chunks_new"])
    info_wall, info_rss, out = run_rss([dobaas, "vault", "info", "--vault", big, "--json"], env)
    info = json.loads(out)

    print(f"# index at scale: {args.chunks:,} simulated chunks ({gen:.0f} s to write their index objects), "
          f"{args.size} MiB images, {os.cpu_count()} cores")
    print(f"{'backup into':20} {'seconds':>8} {'MiB/s':>7} {'RSS MiB':>8} {'new chunks':>11}")
    for k, (wall, rss, new) in res.items():
        print(f"{k:20} {wall:8.2f} {args.size / wall:7.0f} {rss / 1024:8.0f} {new:11}")
    print(f"vault info on the {millions} vault: {info.get('chunks')} chunks, peak RSS {info_rss / 1024:.0f} MiB, "
          f"{info_wall:.1f} s")
    peak = max(r[1] for k, r in res.items() if k != "empty vault") / 1024
    ready = res[ready_label][0] / res["empty vault"][0]
    met = peak <= 300
    print(f"{'MET ' if met else 'MISS'} peak RSS of a backup into a {args.chunks:,}-chunk vault: {peak:.0f} MiB "
          "(target <= 300)")
    print(f"backup time into the large vault (table ready) vs an empty vault: {ready:.2f}x")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
