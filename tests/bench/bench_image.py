"""Disk-image benchmark: dobaas against restic on the same files, in the same run, with ratios.

Run with ``make bench`` (installs restic from Debian when missing). Not part of the test suite: speed and memory
targets live here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orchestrator.demo.imagegen import make_image, scatter_writes

PASS = "bench passphrase"
MiB = 2**20


def run(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run a command that is not measured; return (wall seconds, 0, stdout)."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, env={**os.environ, **(env or {})})
    if p.returncode:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.decode()[-2000:]}")
    return time.monotonic() - t0, 0, p.stdout.decode()


def run_rss(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Like run() but reaps the child itself so its own peak RSS (KiB) is known. Dirty pages are flushed first so
    that neither tool pays for the other's write-back."""
    wall, rss, _tree, out = run_tree_rss(cmd, env)
    return wall, rss, out


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def _tree_pss(pid: int) -> int:
    """The proportional set size (KiB) of a process and all its descendants: what they hold together, shared
    pages counted once."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def run_tree_rss(cmd: list[str], env: dict | None = None) -> tuple[float, int, int, str]:
    """run_rss, and also the peak of the memory its whole process tree holds together (sum of PSS, sampled
    every 50 ms, KiB): a command that works in several processes is judged on all of them."""
    import threading

    os.sync()
    t0 = time.monotonic()
    peak = [0]
    with open(os.devnull, "wb") as devnull:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=devnull, env={**os.environ, **(env or {})})
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], _tree_pss(p.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = p.stdout.read() if p.stdout else b""
        done.set()
        sampler.join()
        _pid, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if p.returncode:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return wall, ru.ru_maxrss, max(peak[0], 1), out.decode()


def bench_setup(default_dir: str, add_args) -> tuple[argparse.Namespace, str, str, str]:  # type: ignore[no-untyped-def]
    """Common start of every benchmark: arguments, a fresh work directory, and both tools located."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=default_dir)
    add_args(ap)
    args = ap.parse_args()
    work = os.path.abspath(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    dobaas = os.path.join(os.path.dirname(sys.executable), "dobaas")
    restic = shutil.which("restic")
    if not restic:
        raise SystemExit("restic is not installed (make bench installs it)")
    return args, work, dobaas, restic


def restic_env(work: str, repository: str | None = None) -> dict[str, str]:
    """restic's environment for a benchmark: the shared passphrase, a repository and cache in ``work``, all
    cores."""
    return {"RESTIC_PASSWORD": PASS, "RESTIC_REPOSITORY": repository or os.path.join(work, "restic"),
            "RESTIC_CACHE_DIR": os.path.join(work, "restic-cache"), "GOMAXPROCS": str(os.cpu_count())}


def scattered_writes(size: int, fraction: float, block: int, write) -> tuple[int, set[int]]:  # type: ignore[no-untyped-def]
    """``fraction`` of a ``size``-byte disk written as ``block``-byte writes at random 4 KiB-aligned offsets
    (same seed every run): ``write(offset, fill byte)`` does one. Returns the count and the blocks touched."""
    rng = random.Random(7)
    count = max(1, round(size * fraction / block))
    touched: set[int] = set()
    for i in range(count):
        off = rng.randrange(0, (size - block) // 4096) * 4096
        write(off, i % 255 + 1)
        touched.update(range(off // block, (off + block - 1) // block + 1))
    return count, touched


def print_vm_table(res: dict[str, dict], growth: int) -> None:
    """The full/incremental table of the VM benchmarks (dobaas and restic, time, bytes read, RSS), the
    incremental against the full, and the vault growth of the incremental."""
    full, incr = res["full"], res["incremental"]
    print(f"{'step':12} {'dobaas s':>9} {'read MiB':>9} {'restic s':>9} {'read MiB':>9} {'speed x':>8} "
          f"{'d RSS':>6} {'r RSS':>6}")
    for tag, r in res.items():
        print(f"{tag:12} {r['seconds']:9.2f} {r['bytes_read'] / MiB:9.1f} {r['restic_seconds']:9.2f} "
              f"{r['restic_read'] / MiB:9.1f} {r['restic_seconds'] / r['seconds']:8.1f} {r['rss']:6.0f} "
              f"{r['restic_rss']:6.0f}")
    print(f"incremental vs full read of the same disk: {full['seconds'] / incr['seconds']:.1f}x faster, "
          f"{full['bytes_read'] / max(1, incr['bytes_read']):.0f}x fewer bytes read")
    print(f"vault growth for the incremental: {growth / MiB:.1f} MiB (restic {incr['restic_growth'] / MiB:.1f} MiB)")


def du(path: str) -> int:
    total = 0
    for dirpath, _d, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except FileNotFoundError:
                pass
    return total


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(8 * MiB):
            h.update(b)
    return h.hexdigest()


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(16 * MiB):
            pass


def compare_restores(dobaas: str, restic: str, work: str, env: dict, renv: dict, vault: str, snap: str,
                     expected: str) -> tuple[dict, dict]:
    """Restore ``snap`` with dobaas and restic's latest snapshot with restic; both durable (dobaas fsyncs;
    restic is timed with a sync after it). Returns (dobaas, restic) {seconds, rss_mib, ok[, durable_seconds]}."""
    out_d = os.path.join(work, "restored-dobaas.img")
    wall, rss, _ = run_rss([dobaas, "restore", "image", snap, "--vault", vault, "--output", out_d], env)
    d = {"seconds": wall, "rss_mib": rss / 1024, "ok": sha256(out_d) == expected}
    os.unlink(out_d)
    out_r = os.path.join(work, "restored-restic")
    wall, rss, _ = run_rss([restic, "restore", "latest", "--target", out_r], renv)
    t0 = time.monotonic()
    os.sync()  # dobaas's restore ends with fsync (durable); restic's leaves its data in the page cache
    synced = time.monotonic() - t0
    restored = next(os.path.join(dp, f) for dp, _d, fs in os.walk(out_r) for f in fs)
    r = {"seconds": wall, "rss_mib": rss / 1024, "ok": sha256(restored) == expected, "durable_seconds": wall + synced}
    shutil.rmtree(out_r)
    return d, r


def make_ext4(path: str, work: str) -> None:
    """A 1.5 GiB ext4 image holding copies of system files and 300 MiB of random files, made by mkfs.ext4 -d."""
    src = os.path.join(work, "ext4-src")
    os.makedirs(os.path.join(src, "random"))
    for d in ("/usr/include", "/usr/lib/python3", "/usr/share/doc", "/usr/share/locale"):
        if os.path.isdir(d):
            subprocess.run(["cp", "-a", d, os.path.join(src, d.strip("/").replace("/", "-"))], check=True)
    rng = random.Random(4)
    for i in range(300):
        with open(os.path.join(src, "random", f"r{i:03d}.bin"), "wb") as f:
            f.write(rng.randbytes(MiB))
    with open(path, "wb") as f:
        f.truncate(1536 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", src, path], check=True)
    shutil.rmtree(src)


def main() -> int:
    def add_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--size", type=int, default=2048, help="image size in MiB")
        ap.add_argument("--sweep", default="65536,131072,262144,1048576", help="block sizes to compare")

    args, work, dobaas, restic = bench_setup(".bench", add_args)
    env = {"DOBAAS_PASSPHRASE": PASS}
    renv = restic_env(work)
    img = os.path.join(work, "disk.img")
    size = args.size * MiB
    rver = subprocess.run([restic, "version"], capture_output=True, text=True).stdout.split()[1]
    print(f"# image benchmark: {args.size} MiB image (40% holes, 30% system files, 30% random), "
          f"{os.cpu_count()} cores, restic {rver}")
    t0 = time.monotonic()
    make_image(img, size)
    base = os.path.join(work, "base.img")
    subprocess.run(["cp", "--sparse=always", img, base], check=True)
    print(f"generated in {time.monotonic() - t0:.1f} s")

    vault = os.path.join(work, "vault")
    run([dobaas, "vault", "init", vault], env)
    run([restic, "init"], renv)
    res: dict[str, dict] = {"dobaas": {}, "restic": {}}

    def d_backup(tag: str, extents: str | None = None) -> None:
        warm(img)
        cmd = [dobaas, "backup", "image", img, "--vault", vault, "--name", "disk", "--json"]
        if extents:
            cmd += ["--changed-extents", extents]
        before = du(vault)
        wall, rss, out = run_rss(cmd, env)
        j = json.loads(out)
        res["dobaas"][tag] = {"seconds": wall, "rss_mib": rss / 1024, "growth": du(vault) - before,
                              "read": j["bytes_read"]}

    def r_backup(tag: str) -> None:
        warm(img)
        before = du(renv["RESTIC_REPOSITORY"])
        wall, rss, _ = run_rss([restic, "backup", "--quiet", img], renv)
        res["restic"][tag] = {"seconds": wall, "rss_mib": rss / 1024, "growth": du(renv["RESTIC_REPOSITORY"]) - before,
                              "read": size}

    d_backup("full")
    r_backup("full")
    ext02 = os.path.join(work, "extents-0.2.json")
    with open(ext02, "w") as f:
        json.dump(scatter_writes(img, 0.002, seed=2), f)
    d_backup("incr 0.2%", ext02)
    r_backup("incr 0.2%")
    ext5 = os.path.join(work, "extents-5.json")
    with open(ext5, "w") as f:
        json.dump(scatter_writes(img, 0.05, seed=5), f)
    sum5 = sha256(img)
    d_backup("incr 5%", ext5)
    r_backup("incr 5%")

    # restore the latest (5%) snapshot with both tools
    snaps = json.loads(run([dobaas, "snapshots", "--vault", vault, "--json"], env)[2])
    res["dobaas"]["restore"], res["restic"]["restore"] = compare_restores(
        dobaas, restic, work, env, renv, vault, snaps[-1]["id"], sum5)

    # the fixed cost of a command: a backup told that nothing changed (start, key, index, lock, publish)
    empty = os.path.join(work, "extents-none.json")
    with open(empty, "w") as f:
        json.dump([], f)
    fixed = sorted(run_rss([dobaas, "backup", "image", img, "--vault", vault, "--name", "disk", "--changed-extents",
                            empty, "--json"], env)[0] for _ in range(3))[1]
    # the same backup as the daemon runs it: in its process, the vault opened again for each run
    in_daemon = json.loads(run([sys.executable, os.path.join(os.path.dirname(__file__), "daemon_run_cost.py"),
                                vault, img, "disk", PASS], env)[2])["median"]

    # a real file system: an ext4 image made by mkfs.ext4 -d from system files plus random files
    ext4 = os.path.join(work, "ext4.img")
    make_ext4(ext4, work)
    ext4_sum, ext4_size = sha256(ext4), os.path.getsize(ext4)
    wall_d, _, out = run_rss([dobaas, "backup", "image", ext4, "--vault", vault, "--name", "ext4", "--json"], env)
    ext4_id = json.loads(out)["id"]
    renv4 = restic_env(work, os.path.join(work, "restic-ext4"))
    run([restic, "init"], renv4)
    wall_r, _, _ = run_rss([restic, "backup", "--quiet", ext4], renv4)
    e4d, e4r = compare_restores(dobaas, restic, work, env, renv4, vault, ext4_id, ext4_sum)

    # memory flat from 2 GiB to 8 GiB (sparse): a fresh vault, the base image grown with a hole tail
    big = os.path.join(work, "big.img")
    subprocess.run(["cp", "--sparse=always", base, big], check=True)
    os.truncate(big, 4 * size)
    vault8 = os.path.join(work, "vault8")
    run([dobaas, "vault", "init", vault8], env)
    _wall, rss8, _ = run_rss([dobaas, "backup", "image", big, "--vault", vault8, "--name", "big", "--json"], env)
    shutil.rmtree(vault8)
    os.unlink(big)

    # block-size sweep for the 0.2% incremental: vault growth against speed
    sweep = []
    for bs in [int(x) for x in args.sweep.split(",") if x]:
        v = os.path.join(work, f"vault-{bs}")
        run([dobaas, "vault", "init", v, "--block-size", str(bs), "--kdf-cost", "12"], env)
        subprocess.run(["cp", "--sparse=always", base, img], check=True)
        w_full, rss_full, _ = run_rss([dobaas, "backup", "image", img, "--vault", v, "--name", "d", "--json"], env)
        before = du(v)
        e = os.path.join(work, f"sweep-{bs}.json")
        with open(e, "w") as f:
            json.dump(scatter_writes(img, 0.002, seed=2), f)
        w_inc, _, _ = run_rss([dobaas, "backup", "image", img, "--vault", v, "--name", "d", "--changed-extents", e,
                               "--json"], env)
        sweep.append((bs, w_full, w_inc, du(v) - before, rss_full / 1024))
        shutil.rmtree(v)

    D, R = res["dobaas"], res["restic"]
    print()
    print(f"{'step':12} {'dobaas s':>9} {'restic s':>9} {'speed x':>8} {'dobaas MiB/s':>13} {'restic MiB/s':>13} "
          f"{'dobaas +MiB':>12} {'restic +MiB':>12} {'d RSS':>7} {'r RSS':>7}")
    for tag in ("full", "incr 0.2%", "incr 5%"):
        d, r = D[tag], R[tag]
        print(f"{tag:12} {d['seconds']:9.2f} {r['seconds']:9.2f} {r['seconds'] / d['seconds']:8.1f} "
              f"{size / MiB / d['seconds']:13.0f} {size / MiB / r['seconds']:13.0f} {d['growth'] / MiB:12.1f} "
              f"{r['growth'] / MiB:12.1f} {d['rss_mib']:7.0f} {r['rss_mib']:7.0f}")
    d, r = D["restore"], R["restore"]
    print(f"{'restore':12} {d['seconds']:9.2f} {r['seconds']:9.2f} {r['seconds'] / d['seconds']:8.1f} "
          f"{size / MiB / d['seconds']:13.0f} {size / MiB / r['seconds']:13.0f} {'':12} {'':12} "
          f"{d['rss_mib']:7.0f} {r['rss_mib']:7.0f}   identical: dobaas {d['ok']}, restic {r['ok']}")
    print(f"ext4 image ({ext4_size / MiB:.0f} MiB, mkfs.ext4 -d): backup dobaas {wall_d:.2f} s, restic {wall_r:.2f} s; "
          f"restore dobaas {e4d['seconds']:.2f} s (fsync'd), restic {e4r['seconds']:.2f} s + sync = "
          f"{e4r['durable_seconds']:.2f} s; identical: dobaas {e4d['ok']}, restic {e4r['ok']}")
    print(f"fixed cost of a command (a backup with no changed extents, median of three): {fixed:.3f} s; of the "
          f"same backup run by the daemon (median of five): {in_daemon:.3f} s")
    print(f"restore, both durable (restic + sync): dobaas {d['seconds']:.2f} s (fsync'd), restic "
          f"{r['durable_seconds']:.2f} s: {r['durable_seconds'] / d['seconds']:.2f}x")
    print(f"peak RSS, full backup: {D['full']['rss_mib']:.0f} MiB at {args.size} MiB; {rss8 / 1024:.0f} MiB at "
          f"{4 * args.size} MiB (sparse)")
    print()
    print("block size sweep (0.2% scattered 64 KiB writes):")
    print(f"{'block':>8} {'full s':>7} {'incr s':>7} {'incr growth MiB':>16} {'full RSS MiB':>13}")
    for bs, wf, wi, g, rs in sweep:
        print(f"{bs // 1024:>6}Ki {wf:7.2f} {wi:7.2f} {g / MiB:16.1f} {rs:13.0f}")
    print()
    targets = [
        ("full backup throughput >= 2x restic", R["full"]["seconds"] / D["full"]["seconds"], 2.0),
        ("0.2% incremental >= 20x faster than restic", R["incr 0.2%"]["seconds"] / D["incr 0.2%"]["seconds"], 20.0),
        ("restore throughput >= 2x restic (both durable: restic's timed with the sync after it)",
         R["restore"]["durable_seconds"] / D["restore"]["seconds"], 2.0),
        ("ext4 image restore >= 2x restic (both durable)", e4r["durable_seconds"] / e4d["seconds"], 2.0),
    ]
    ok = True
    for label, value, goal in targets:
        met = value >= goal
        ok &= met
        print(f"{'MET ' if met else 'MISS'} {label}: {value:.2f}x")
    growth = D["incr 0.2%"]["growth"] / MiB
    met = growth <= 12
    ok &= met
    print(f"{'MET ' if met else 'MISS'} vault growth for the 0.2% incremental <= 12 MiB: {growth:.1f} MiB "
          f"(restic {R['incr 0.2%']['growth'] / MiB:.1f} MiB)")
    peak = max(D[t]["rss_mib"] for t in ("full", "incr 0.2%", "incr 5%", "restore"))
    met = peak <= 300 and rss8 / 1024 <= 1.25 * D["full"]["rss_mib"]
    ok &= met
    print(f"{'MET ' if met else 'MISS'} peak RSS <= 300 MiB and flat from {args.size} to {4 * args.size} MiB: "
          f"{peak:.0f} MiB, {D['full']['rss_mib']:.0f} -> {rss8 / 1024:.0f} MiB")
    met = fixed < 0.15
    ok &= met
    print(f"{'MET ' if met else 'MISS'} fixed cost of a command < 0.15 s: {fixed:.3f} s")
    print(f"{'MET ' if in_daemon < 0.15 else 'MISS'} fixed cost of a scheduled run in the daemon < 0.15 s: "
          f"{in_daemon:.3f} s (not the command's: a process and a key derivation cost 0.2-0.3 s by themselves)")
    print(f"restored images identical to the source: dobaas {D['restore']['ok']}, restic {R['restore']['ok']}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok and D["restore"]["ok"] and e4d["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
