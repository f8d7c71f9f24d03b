"""The scheduler daemon: schedules over days with an injectable clock, catch-up, reload, and a real daemon
process stopped by SIGTERM in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.scheduler.clock import FakeClock
from orchestrator.scheduler.daemon import Scheduler
from orchestrator.vault.backend.local import TMP_PREFIX
from tests.conftest import DOBAAS, PASS, Cli

pytestmark = [pytest.mark.scheduler, pytest.mark.usefixtures("utc_local")]


def policy_file(d: Path, name: str, schedule: str, paths: list[str], vault: str = "/tmp/unused") -> Path:
    p = d / f"{name}.yaml"
    p.write_text(f"policy: {name}\nclient: acme\nvault: {vault}\nschedule: \"{schedule}\"\nsources:\n"
                 f"  - {{name: {name}-src, plugin: files, paths: {json.dumps(paths)}}}\n")
    return p


def test_schedules_over_three_days(tmp_path: Path) -> None:
    policy_file(tmp_path, "nightly", "0 22 * * *", ["/x"])
    policy_file(tmp_path, "sixhourly", "30 */6 * * *", ["/y"])
    (tmp_path / "broken.yaml").write_text("policy: broken\nclient: acme\n")  # ignored, logged
    start = datetime(2026, 11, 26, 12, 0).astimezone()
    clock = FakeClock(start)
    ran: list[tuple[str, str]] = []
    s = Scheduler(str(tmp_path), lambda p, trig, only, abort: ran.append((p.policy, f"{clock.now():%d %H:%M}")),
                  clock=clock, catch_up=False)
    s.load(first=True)
    assert sorted(s.entries) == ["nightly", "sixhourly"]
    while clock.now() < start + timedelta(days=3):
        s.step()
    assert [t for n, t in ran if n == "nightly"] == ["26 22:00", "27 22:00", "28 22:00"]
    assert [t for n, t in ran if n == "sixhourly"][:5] == ["26 12:30", "26 18:30", "27 00:30", "27 06:30", "27 12:30"]
    assert len([n for n, _ in ran if n == "sixhourly"]) == 12


def test_catch_up_and_reload(tmp_path: Path) -> None:
    policy_file(tmp_path, "nightly", "0 22 * * *", ["/x"])
    now = datetime(2026, 11, 26, 12, 0).astimezone()
    for catch_up, expected in ((True, ["26 12:00"]), (False, [])):
        clock = FakeClock(now)
        ran: list[str] = []
        s = Scheduler(str(tmp_path), lambda p, t, o, a: ran.append(f"{clock.now():%d %H:%M}"), clock=clock,  # noqa: B023
                      last_run=lambda _n: now - timedelta(days=2), catch_up=catch_up)
        s.load(first=True)
        s.step()
        assert ran == expected
    policy_file(tmp_path, "added", "0 1 * * *", ["/z"])
    s.reload_requested = True
    s.step()
    assert sorted(s.entries) == ["added", "nightly"]


def _wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_daemon_runs_policies_and_stops_cleanly_mid_run(tmp_path: Path, cli: Cli) -> None:
    pol = tmp_path / "policies"
    pol.mkdir()
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    big.mkdir()
    (small / "a.txt").write_text("hello")
    for d in range(20):  # 20,000 small files: several seconds of work, so SIGTERM lands mid-run
        (big / f"d{d:02d}").mkdir()
        for i in range(1000):
            (big / f"d{d:02d}" / f"f{i:04d}").write_bytes(os.urandom(2048))
    vault_a, vault_c = tmp_path / "va", tmp_path / "vc"
    cli("vault", "init", str(vault_a), "--kdf-cost", "12")
    cli("vault", "init", str(vault_c), "--kdf-cost", "12", "--pack-size", "1MiB")
    policy_file(pol, "a-small", "0 3 * * *", [str(small)], str(vault_a))
    policy_file(pol, "b-broken", "0 3 * * *", [str(tmp_path / "missing")], str(vault_a))
    catalog = str(tmp_path / "cat.db")
    env = {**os.environ, "DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": catalog}

    def daemon() -> subprocess.Popen[str]:
        return subprocess.Popen([DOBAAS, "--log-json", "-v", "daemon", "--policies", str(pol), "--run-now",
                                 "--max-concurrent", "2"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def jobs() -> list[dict]:
        p = subprocess.run([DOBAAS, "jobs", "--json"], env=env, capture_output=True, text=True)
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []

    d = daemon()
    try:
        _wait(lambda: len([j for j in jobs() if j["status"] != "running"]) >= 2, 60, "both policies to run")
    except AssertionError:
        d.kill()
        raise AssertionError(d.communicate()[1][-3000:]) from None
    d.send_signal(signal.SIGTERM)
    _out, err = d.communicate(timeout=30)
    assert d.returncode == 0, err
    assert {(j["source"], j["status"], j["trigger"]) for j in jobs()} == {
        ("a-small-src", "ok", "schedule"), ("b-broken-src", "failed", "schedule")}
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert any("SIGTERM" in x["message"] for x in lines) and all({"time", "level", "message"} <= set(x) for x in lines)

    policy_file(pol, "c-big", "0 3 * * *", [str(big)], str(vault_c))
    d = daemon()
    def packs() -> list[Path]:  # stored packs, not an upload's temporary file (linked to its pack for a moment)
        if not (vault_c / "data").exists():
            return []
        return [p for p in (vault_c / "data").rglob("*") if p.is_file() and not p.name.startswith(TMP_PREFIX)]

    _wait(lambda: len(packs()) >= 4, 120, "the big run to store packs")
    d.send_signal(signal.SIGTERM)
    _out, err = d.communicate(timeout=60)
    assert d.returncode == 0, err
    # stopped after a few of ~40 packs: nothing was published, the vault is intact
    assert json.loads(cli("snapshots", "--vault", str(vault_c), "--json").stdout) == []
    ver = json.loads(cli("verify", "--vault", str(vault_c), "--json").stdout)
    assert ver["ok"] and ver["chunks_checked"] > 1000  # the aborted run indexed the packs it finished
    # the aborted run left its job in the history, as interrupted, never claiming success
    assert [j["status"] for j in jobs() if j["source"] == "c-big-src"] == ["interrupted"]
    aborted = sum(p.stat().st_size for p in packs())  # what the aborted run left
    assert aborted >= 3 * 2**20
    res = json.loads(cli("run", str(pol / "c-big.yaml"), "--json").stdout)["sources"][0]
    # the same backup into a fresh vault: what the resumed run would have stored without reuse
    fresh = tmp_path / "vfresh"
    cli("vault", "init", str(fresh), "--kdf-cost", "12", "--pack-size", "1MiB")
    policy_file(tmp_path, "c-fresh", "0 3 * * *", [str(big)], str(fresh))
    baseline = json.loads(cli("run", str(tmp_path / "c-fresh.yaml"), "--json").stdout)["sources"][0]["bytes_stored"]
    assert res["status"] == "ok" and res["files"] == 20000
    # the next run reuses what the aborted one stored instead of sending it again
    assert res["bytes_stored"] <= baseline - 0.5 * aborted, (res["bytes_stored"], baseline, aborted)


def test_failed_sources_are_retried_with_backoff(tmp_path: Path) -> None:
    from types import SimpleNamespace

    p = policy_file(tmp_path, "nightly", "0 22 * * *", ["/x"])
    p.write_text(p.read_text().replace("sources:", "retry: {attempts: 2, delay_minutes: 10}\nsources:"))
    start = datetime(2026, 11, 26, 21, 0).astimezone()
    clock = FakeClock(start)
    calls: list[tuple[str, str, object]] = []

    def runner(pol, trigger, only, abort):  # type: ignore[no-untyped-def]
        calls.append((f"{clock.now():%d %H:%M}", trigger, only))
        failing = len(calls) <= 3  # the first run and both retries fail; the next night succeeds
        return SimpleNamespace(sources=[SimpleNamespace(source="nightly-src", status="failed" if failing else "ok")])

    s = Scheduler(str(tmp_path), runner, clock=clock, catch_up=False)
    s.load(first=True)
    while clock.now() < start + timedelta(days=1, hours=2):
        s.step()
    assert calls == [("26 22:00", "schedule", None), ("26 22:10", "retry", ["nightly-src"]),
                     ("26 22:40", "retry", ["nightly-src"]), ("27 22:00", "schedule", None)]


def test_window_arithmetic() -> None:
    from orchestrator.policy.window import parse_window, window_state

    at = lambda h, m: datetime(2026, 11, 26, h, m).astimezone()  # noqa: E731
    assert window_state("22:00-06:00", at(23, 0))[:2] == (True, at(6, 0) + timedelta(days=1))
    assert window_state("22:00-06:00", at(3, 0))[:2] == (True, at(6, 0))
    inside, _end, nxt = window_state("22:00-06:00", at(12, 0))
    assert not inside and nxt == at(22, 0)
    assert window_state("01:00-02:00", at(3, 0))[2] == at(1, 0) + timedelta(days=1)
    for bad in ("22-06", "25:00-01:00", "10:00-10:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_run_outside_its_window_waits_for_it(tmp_path: Path) -> None:
    p = policy_file(tmp_path, "nightly", "0 12 * * *", ["/x"])
    p.write_text(p.read_text().replace("sources:", "window: '22:00-23:00'\nsources:"))
    start = datetime(2026, 11, 26, 11, 0).astimezone()
    clock = FakeClock(start)
    ran: list[str] = []
    s = Scheduler(str(tmp_path), lambda pol, t, o, a: ran.append(f"{clock.now():%d %H:%M}"), clock=clock,
                  catch_up=False)
    s.load(first=True)
    while clock.now() < start + timedelta(hours=12):
        s.step()
    assert ran == ["26 22:00"]  # due at noon, outside 22:00-23:00: run when the window opens


def test_window_end_stops_a_run_cleanly(tmp_path: Path, cli: Cli) -> None:
    pol = tmp_path / "policies"
    pol.mkdir()
    # 48 MiB of incompressible data uploaded at 4 MiB/s (the policy's bandwidth limit): 12 s of work, whatever
    # the machine's speed, so the window always closes mid-run
    big = tmp_path / "many"
    nfiles, size = 384, 128 * 1024
    for d in range(8):
        (big / f"d{d:02d}").mkdir(parents=True)
        for i in range(nfiles // 8):
            (big / f"d{d:02d}" / f"f{i:04d}").write_bytes(os.urandom(size))
    vault = tmp_path / "v"
    cli("vault", "init", str(vault), "--kdf-cost", "12", "--pack-size", "1MiB")
    now = datetime.now().astimezone()
    # 4 s: room for the daemon to start and store a part even on a loaded machine, far from the whole
    window = f"{now - timedelta(minutes=5):%H:%M:%S}-{now + timedelta(seconds=4):%H:%M:%S}"
    p = policy_file(pol, "big", "0 3 * * *", [str(big)], str(vault))
    p.write_text(p.read_text().replace("sources:", f"window: '{window}'\nbandwidth_limit: 4MiB/s\nsources:"))
    env = {**os.environ, "DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": str(tmp_path / "cat.db")}
    d = subprocess.Popen([DOBAAS, "--log-json", "-v", "daemon", "--policies", str(pol), "--run-now"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    def jobs() -> list[dict]:
        r = subprocess.run([DOBAAS, "jobs", "--json"], env=env, capture_output=True, text=True)
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []

    try:
        deadline = time.monotonic() + 90
        while not [j for j in jobs() if j["status"] != "running"] and time.monotonic() < deadline \
                and d.poll() is None:
            time.sleep(0.2)
        running = d.poll() is None  # the daemon keeps running: only the run stopped
    finally:
        d.send_signal(signal.SIGTERM)
        _out, err = d.communicate(timeout=60)
    assert running and jobs(), err[-3000:]
    job = jobs()[0]
    assert job["status"] == "interrupted" and "window closed" in job["errors"][0], (job, err[-2000:])
    assert json.loads(cli("snapshots", "--vault", str(vault), "--json").stdout) == []
    assert json.loads(cli("verify", "--vault", str(vault), "--json").stdout)["ok"]
    p.write_text(p.read_text().replace("bandwidth_limit: 4MiB/s\n", ""))
    res = json.loads(cli("run", str(p), "--json").stdout)["sources"][0]  # `run` ignores windows
    assert res["status"] == "ok" and res["files"] == nfiles
    assert res["bytes_stored"] < 0.95 * nfiles * size  # what the stopped run stored is reused


def test_policies_run_concurrently_but_never_two_runs_of_a_source(tmp_path: Path) -> None:
    import threading

    policy_file(tmp_path, "alpha", "0 22 * * *", ["/a"])
    policy_file(tmp_path, "beta", "0 22 * * *", ["/b"])
    twin = policy_file(tmp_path, "gamma", "0 22 * * *", ["/c"])  # same client and source name as alpha
    twin.write_text(twin.read_text().replace("gamma-src", "alpha-src"))
    both = threading.Barrier(2, timeout=10)
    active: dict[str, int] = {}
    overlaps: list[str] = []
    lock = threading.Lock()

    ran: list[str] = []

    def runner(pol, trigger, only, abort):  # type: ignore[no-untyped-def]
        src = f"{pol.client}/{pol.source_configs[0].name}"
        with lock:
            ran.append(pol.policy)
            active[src] = active.get(src, 0) + 1
            if active[src] > 1:
                overlaps.append(src)
        try:
            if pol.policy in ("alpha", "beta"):
                both.wait()  # only passes if alpha and beta run at the same time
        finally:
            with lock:
                active[src] -= 1

    clock = FakeClock(datetime(2026, 11, 26, 21, 59).astimezone())
    s = Scheduler(str(tmp_path), runner, clock=clock, catch_up=False, run_now=True, max_concurrent=3)
    s.load(first=True)
    deadline = time.monotonic() + 20
    while (len(set(ran)) < 3 or s.running) and time.monotonic() < deadline:
        s.step()
        time.sleep(0.01)
    assert set(ran) == {"alpha", "beta", "gamma"} and not s.running
    assert not both.broken  # alpha and beta ran at the same time
    assert overlaps == []  # but gamma never ran with alpha: it backs up the same source


def test_sources_of_a_policy_run_concurrently_and_stop_on_abort(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading
    from contextlib import contextmanager

    from orchestrator.backup.abort import AbortSignal
    from orchestrator.backup.runner import run_policy
    from orchestrator.plugin import registry
    from orchestrator.plugin.base import SourcePlugin
    from orchestrator.plugin.streams import ByteStream, Capture, IterReader
    from orchestrator.policy.model import load_policy
    from orchestrator.scheduler.daemon import StopRequested
    from orchestrator.vault.backend.local import LocalBackend
    from orchestrator.vault.repository import Vault
    from plugins.files.plugin import FilesConfig

    both = threading.Barrier(2, timeout=10)
    abort = AbortSignal()
    produced: list[int] = []  # 256 KiB blocks the sources' streams were asked for

    class Slow(SourcePlugin):
        name = "files"
        Config = FilesConfig

        @contextmanager
        def capture(self, cfg, checkpoint, ctx):  # type: ignore[no-untyped-def]
            both.wait()  # both sources are capturing at the same time

            def data():  # type: ignore[no-untyped-def]
                for i in range(10_000):
                    if i == 3:
                        abort.fire(lambda: StopRequested("stop"))
                    produced.append(1)
                    yield os.urandom(256 * 1024)

            yield Capture([ByteStream("data", IterReader(data()))])

    monkeypatch.setattr(registry, "load", lambda _name: Slow())
    p = policy_file(tmp_path, "par", "0 22 * * *", ["/x"], str(tmp_path / "vault"))
    p.write_text(p.read_text().replace("sources:", "concurrency: 2\nsources:")
                 + "  - {name: second, plugin: files, paths: [/y]}\n")
    Vault.create(LocalBackend(str(tmp_path / "vault")), PASS, kdf_cost=12)
    vault = Vault.open(LocalBackend(str(tmp_path / "vault")), PASS)
    with pytest.raises(StopRequested):
        run_policy(load_policy(str(p)), vault, None, abort=abort)
    assert not both.broken
    assert vault.snapshot_ids() == []  # stopped mid-stream: nothing published
    # the streams stopped within a few chunks of the stop, not after reading the rest of the 2.5 GB "dumps"
    assert len(produced) < 2 * 100, len(produced)


def test_a_stop_request_ends_a_walk_of_unchanged_files_without_waiting_for_reads(tmp_path: Path) -> None:
    """An incremental over many unchanged files stores nothing while it walks; a closed window must still stop it
    at once, not after the walk."""
    from orchestrator.backup.abort import AbortSignal
    from orchestrator.backup.session import BackupSession
    from orchestrator.cbt.tree import capture_tree
    from orchestrator.errors import WindowClosed
    from orchestrator.plugin.localtree.walk import LocalTree
    from orchestrator.vault.backend.local import LocalBackend
    from orchestrator.vault.repository import Vault

    src = tmp_path / "src"
    src.mkdir()
    for i in range(9000):
        (src / f"f{i:05d}").write_bytes(b"x")
    vault = Vault.create(LocalBackend(str(tmp_path / "v")), PASS, kdf_cost=12)
    with BackupSession(vault, "c/s") as s:
        cap = capture_tree(s.writer, LocalTree(str(src)), "tree", vault.config.chunker)
        s.commit([cap.item], {}, {})
    abort = AbortSignal()
    abort.fire(lambda: WindowClosed("window closed"))
    walked = []

    class Counting(LocalTree):
        def walk(self, previous=None):  # type: ignore[no-untyped-def, override]
            for e in super().walk(previous):
                walked.append(e)
                yield e

    vault = Vault.open(vault.backend, PASS)
    with pytest.raises(WindowClosed), BackupSession(vault, "c/s", abort=abort) as s:
        capture_tree(s.writer, Counting(str(src)), "tree", vault.config.chunker, s.parent_item("tree"))
    assert len(walked) <= 4097  # stopped at the first check, not after the 9,001 entries


def test_catch_up_reads_the_policys_own_catalog(tmp_path: Path, cli: Cli) -> None:
    """A policy that records into its own catalog (``catalog:``) is caught up from that catalog's history, not
    from the daemon's default one."""
    from orchestrator.catalog.db import Catalog

    pol = tmp_path / "policies"
    pol.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    vault = tmp_path / "v"
    cli("vault", "init", str(vault), "--kdf-cost", "12")
    own = tmp_path / "own-catalog.db"
    p = policy_file(pol, "nightly", "0 3 * * *", [str(src)], str(vault))
    p.write_text(p.read_text().replace("sources:", f"catalog: {own}\nsources:"))
    two_days_ago = (datetime.now().astimezone() - timedelta(days=2)).isoformat()
    Catalog(f"sqlite:///{own}").record_job(run_id="old", policy="nightly", client="acme", source="nightly-src",
                                           plugin="files", trigger="schedule", status="ok", started=two_days_ago,
                                           ended=two_days_ago, snapshot_id=None, bytes_read=0, bytes_stored=0,
                                           files=0, warnings=[], errors=[])
    env = {**os.environ, "DOBAAS_PASSPHRASE": PASS, "DOBAAS_CATALOG": str(tmp_path / "daemon-default.db")}
    d = subprocess.Popen([DOBAAS, "--log-json", "-v", "daemon", "--policies", str(pol)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        _wait(lambda: len(Catalog(f"sqlite:///{own}").jobs(policy="nightly")) >= 2
              and Catalog(f"sqlite:///{own}").jobs(policy="nightly")[0]["status"] == "ok", 60, "the catch-up run")
    finally:
        d.send_signal(signal.SIGTERM)
        _out, err = d.communicate(timeout=60)
    assert "missed its run" in err and "catching up now" in err, err[-2000:]
