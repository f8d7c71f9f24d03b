"""Export benchmark (reversibility): a 20,000-file tree and a 1 GiB disk image backed up by both tools, then
handed back in a standard format: `dobaas export --format tar` against `restic dump --archive tar`, and
`dobaas export --format raw` against `restic dump` of the image file; both timed until the output is on disk
(dobaas fsyncs; restic's output is followed by a sync). Informational: no target. Run by `make bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from orchestrator.demo.imagegen import make_image
from tests.bench.bench_files import make_tree
from tests.bench.bench_image import PASS, bench_setup, restic_env, run, run_rss

MiB = 2**20


def main() -> int:
    args, work, dobaas, restic = bench_setup(".bench-export", lambda ap: ap.add_argument("--files", type=int,
                                                                                         default=20_000))
    env = {"DOBAAS_PASSPHRASE": PASS}
    renv = restic_env(work)
    src = os.path.join(work, "tree")
    os.makedirs(src)
    total = make_tree(src, args.files)
    img = os.path.join(work, "disk.img")
    make_image(img, 1024 * MiB)
    rver = subprocess.run([restic, "version"], capture_output=True, text=True).stdout.split()[1]
    print(f"# export benchmark: {args.files} files ({total / MiB:.0f} MiB) and a 1 GiB image, "
          f"{os.cpu_count()} cores, restic {rver}")
    vault = os.path.join(work, "vault")
    run([dobaas, "vault", "init", vault], env)
    run([restic, "init"], renv)
    ids = {}
    for name, path in (("tree", src), ("image", img)):
        if name == "tree":
            pol = os.path.join(work, "p.yaml")
            with open(pol, "w") as f:
                json.dump({"policy": "b", "client": "acme", "vault": vault,
                           "sources": [{"name": "docs", "plugin": "files", "paths": [src]}]}, f)
            run([dobaas, "run", pol], env)
        else:
            run([dobaas, "backup", "image", img, "--vault", vault, "--name", "acme/disk"], env)
        run([restic, "backup", "--quiet", "--tag", name, path], renv)
    for s in json.loads(run([dobaas, "snapshots", "--vault", vault, "--json"], env)[2]):
        ids["tree" if s["name"] == "acme/docs" else "image"] = s["id"]
    rows = []
    for kind, fmt, rpath in (("tree", "tar", src), ("image", "raw", img)):
        out = os.path.join(work, f"export-{kind}")
        wall, rss, _ = run_rss([dobaas, "export", ids[kind], "--vault", vault, "--format", fmt, "--output", out],
                               env)
        d = (wall, rss / 1024)
        target = os.path.join(work, f"restic-{kind}.out")
        cmd = [restic, "dump", "--tag", kind] + (["--archive", "tar"] if kind == "tree" else []) + ["latest", rpath]
        os.sync()
        t0 = time.monotonic()
        with open(target, "wb") as f:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, env={**os.environ, **renv})
        if p.returncode:
            raise SystemExit(f"restic dump failed: {p.stderr.decode()[-2000:]}")
        os.sync()
        r = time.monotonic() - t0
        size = os.path.getsize(target)
        rows.append((kind, fmt, d[0], d[1], r, size))
        subprocess.run(["rm", "-rf", out, target])
    print(f"{'what':<8}{'format':<8}{'dobaas s':>10}{'RSS MiB':>9}{'restic s':>10}{'ratio':>8}")
    for kind, fmt, ds, drss, rs, _size in rows:
        print(f"{kind:<8}{fmt:<8}{ds:>10.2f}{drss:>9.0f}{rs:>10.2f}{rs / ds:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
