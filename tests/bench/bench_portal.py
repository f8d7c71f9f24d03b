"""Portal benchmark: a backed-up tree with a 10,000-entry directory, the portal served by `dobaas portal serve`
(its own process, SQLite catalog), then (1) the page and the API listing of that directory, server time from the
Server-Timing header (target: 300 ms), next to `restic ls` of the same directory in restic's repository of the
same tree (the peer's way to list a directory of a snapshot); (2) 50 clients browsing at once, each its own
account and session (target: no error). Loopback only, bounded: about a minute. Run by `make bench`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import httpx

from orchestrator.catalog.db import Catalog
from orchestrator.portal.accounts import Accounts
from tests.bench.bench_image import PASS, bench_setup, restic_env, run

ENTRIES = 10_000
CLIENTS = 50
ROUNDS = 10  # requests per client: dashboard, snapshots, folders, a search, jobs, and the big folder once


def make_tree(root: str) -> str:
    big = os.path.join(root, "scans")
    os.makedirs(big)
    for i in range(ENTRIES):
        with open(os.path.join(big, f"scan-{i:05d}.pdf"), "wb") as f:
            f.write(os.urandom(64) + b"%d" % i)
    os.makedirs(os.path.join(root, "docs"))
    for i in range(50):
        with open(os.path.join(root, "docs", f"note-{i}.txt"), "w") as f:
            f.write(f"note {i}\n" * 50)
    return big


def server_ms(r: httpx.Response) -> float:
    return float(r.headers["server-timing"].split("dur=")[1])


def main() -> int:
    _args, work, dobaas, restic = bench_setup(".bench-portal", lambda ap: None)
    src = os.path.join(work, "tree")
    big = make_tree(src)
    vault, catalog, policies = os.path.join(work, "vault"), os.path.join(work, "catalog.db"), os.path.join(work, "p")
    os.makedirs(policies)
    secret = os.path.join(work, "pass")
    with open(secret, "w") as f:
        f.write(PASS)
    env = {"DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": catalog}
    run([dobaas, "vault", "init", vault], env)
    with open(os.path.join(policies, "acme.yaml"), "w") as f:
        json.dump({"policy": "nightly", "client": "acme", "vault": vault, "passphrase_file": secret,
                   "catalog": catalog, "sources": [{"name": "files", "plugin": "files", "paths": [src]}]}, f)
    run([dobaas, "run", os.path.join(policies, "acme.yaml")], env)
    snap = json.loads(run([dobaas, "snapshots", "--vault", vault, "--json"], env)[2])[0]["id"]
    renv = restic_env(work)
    run([restic, "init"], renv)
    run([restic, "backup", "--quiet", src], renv)

    port = 18000 + os.getpid() % 1000
    server = subprocess.Popen([dobaas, "portal", "serve", "--listen", f"127.0.0.1:{port}", "--policies", policies,
                               "--insecure-cookies"], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    ok = True
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/login", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the portal did not start") from None
                time.sleep(0.2)
        tokens = []
        t0 = time.monotonic()
        accounts = Accounts(Catalog(f"sqlite:///{catalog}").engine)  # the CLI's own call, without 50 starts
        for i in range(CLIENTS):
            login = f"user{i}"
            if i == 0:
                pw = json.loads(run([dobaas, "portal", "user", "add", "--tenant", "acme", "--login", login,
                                     "--json"], env)[2])["password"]
            else:
                pw = accounts.add(login, "acme", "client", datetime.now(UTC))
            r = httpx.post(f"{url}/api/v1/session", json={"login": login, "password": pw}).json()
            r = httpx.post(f"{url}/api/v1/password", json={"old_password": pw, "new_password": f"new pass {i} 2026"},
                           headers={"Authorization": f"Bearer {r['token']}"}).json()
            tokens.append(r["token"])
        setup = time.monotonic() - t0
        cookies = httpx.Client(base_url=url)
        cookies.post("/login", data={"login": "user0", "password": "new pass 0 2026"})

        page, api, client_ms = [], [], []
        for _ in range(7):
            t = time.monotonic()
            r = cookies.get(f"/snapshots/{snap}", params={"path": big})
            client_ms.append((time.monotonic() - t) * 1000)
            assert r.status_code == 200 and r.text.count("scan-") >= ENTRIES, r.status_code
            page.append(server_ms(r))
            r = httpx.get(f"{url}/api/v1/snapshots/{snap}/tree", params={"path": big},
                          headers={"Authorization": f"Bearer {tokens[0]}"})
            assert len(r.json()["entries"]) == ENTRIES
            api.append(server_ms(r))
        rs = []
        for _ in range(3):
            t = time.monotonic()
            out = run([restic, "ls", "latest", big], renv)[2]
            rs.append((time.monotonic() - t) * 1000)
        assert out.count("scan-") == ENTRIES
        p_med, a_med, r_med = statistics.median(page), statistics.median(api), statistics.median(rs)
        print(f"# portal benchmark: a {ENTRIES}-entry directory, {CLIENTS} clients, {os.cpu_count()} cores")
        c_med = statistics.median(client_ms)
        print(f"directory page ({ENTRIES} rows): server {p_med:.0f} ms median (client {c_med:.0f} ms); "
              f"API tree {a_med:.0f} ms; restic ls of the same directory {r_med:.0f} ms -> "
              f"{r_med / p_med:.1f}x")
        if p_med > 300:
            print("MISS: the 10,000-entry page takes more than 300 ms of server time")
            ok = False

        errors: list[str] = []
        lat: list[float] = []
        lock = threading.Lock()

        def browse(token: str) -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
                for n in range(ROUNDS):
                    docs = (f"/api/v1/snapshots/{snap}/tree", {"path": os.path.join(src, "docs")})
                    path, params = [("/api/v1/dashboard", {}), ("/api/v1/snapshots", {}), docs,
                                    ("/api/v1/search", {"q": "note-1*"}), docs, ("/api/v1/jobs", {}), docs,
                                    ("/api/v1/snapshots", {}), docs, (f"/api/v1/snapshots/{snap}/tree", {"path": big})
                                    ][n % 10]
                    t = time.monotonic()
                    try:
                        r = c.get(path, params=params)
                        bad = None if r.status_code == 200 else f"{path}: {r.status_code}"
                    except httpx.HTTPError as e:
                        bad = f"{path}: {e!r}"
                    with lock:
                        lat.append((time.monotonic() - t) * 1000)
                        if bad:
                            errors.append(bad)

        t0 = time.monotonic()
        threads = [threading.Thread(target=browse, args=(tok,)) for tok in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        lat.sort()
        print(f"{CLIENTS} concurrent clients x {ROUNDS} requests: {len(errors)} errors, {len(lat) / wall:.0f} req/s, "
              f"latency p50 {lat[len(lat) // 2]:.0f} ms, p95 {lat[int(len(lat) * 0.95)]:.0f} ms "
              f"(accounts and logins: {setup:.1f} s)")
        if errors:
            print("MISS: errors under load: " + "; ".join(errors[:5]))
            ok = False
    finally:
        server.terminate()
        server.wait(10)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
