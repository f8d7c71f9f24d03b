"""Hostile and mistaken policies: each gets a clear error naming the file and line, fast, and all of a file's
problems at once; neither `run` nor the daemon is ever stopped by one."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.scheduler.clock import FakeClock
from orchestrator.scheduler.daemon import Scheduler, next_runs
from tests.conftest import Cli

pytestmark = [pytest.mark.files, pytest.mark.usefixtures("utc_local")]

HEAD = "policy: p\nclient: c\nvault: /tmp/unused-vault\n"
SRC = "sources:\n  - {name: d, plugin: files, paths: [/tmp]}\n"
BOMB = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True))

HOSTILE = {
    "30 february": (HEAD + "schedule: '0 0 30 2 *'\n" + SRC, 4, "never comes round"),
    "billion laughs": (HEAD + "x-a: &a [l, o, l, o, l, o, l, o, l]\n" + "x-" + BOMB.replace("\n", "\nx-")[:-2] + SRC,
                       0, "expands to more than"),
    "recursive anchor": (HEAD + "x-loop: &a [*a]\n" + SRC, 4, "nested more than"),
    "deep nesting": (HEAD + "x-deep: " + "[" * 3000 + "]" * 3000 + "\n" + SRC, 0, "nested more than"),
    "nul byte": (HEAD + "schedule: '0 1 * * *'\0\n" + SRC, 4, "NUL byte"),
    "date 30 february": (HEAD + "window: 2026-02-30\n" + SRC, 4, "day is out of range"),
    "webhook path": (HEAD + "alerts: {webhook: ../../etc/passwd}\n" + SRC, 4, "alerts.webhook"),
    "boolean rate": (HEAD + "alerts: {change_rate_limit: true}\n" + SRC, 4, "alerts.change_rate_limit"),
    "quota without unit": (HEAD + "quota: '1'\n" + SRC, 4, "with its unit"),
    "huge keep_last": (HEAD + "retention: {keep_last: 1e30}\n" + SRC, 4, "retention.keep_last"),
    "huge keep_last float": (HEAD + "retention: {keep_last: 1.0e+30}\n" + SRC, 4, "retention.keep_last"),
    "huge hours": (HEAD + "alerts: {no_success_hours: 1.0e+308}\n" + SRC, 4, "alerts.no_success_hours"),
    "huge retry delay": (HEAD + "retry: {delay_minutes: 1.0e+30}\n" + SRC, 4, "retry.delay_minutes"),
    "merge of a scalar": (HEAD + "x-s: &s hello\nsources:\n  - {<<: *s, name: d, plugin: files, paths: [/]}\n",
                          6, "merge key"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_policy_is_refused_fast_with_file_and_line(case: str, tmp_path: Path, cli: Cli) -> None:
    text, line, fragment = HOSTILE[case]
    f = tmp_path / "hostile.yaml"
    f.write_text(text)
    t0 = time.monotonic()
    for cmd in (("policy", "check", str(f)), ("run", str(f))):
        p = cli(*cmd, check=False, timeout=30)
        assert p.returncode == 6, (cmd, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
        first = p.stderr.splitlines()[0]
        assert first.startswith(f"dobaas: error: {f}:{line or ''}"), first
        assert fragment in p.stderr, p.stderr
    assert time.monotonic() - t0 < 20


def test_merge_keys_and_author_keys_are_understood(tmp_path: Path, cli: Cli) -> None:
    f = tmp_path / "merge.yaml"
    f.write_text(HEAD + "x-defaults: &d {plugin: files, exclude: ['*.tmp']}\nsources:\n"
                 "  - {<<: *d, name: one, paths: [/tmp]}\n  - {<<: *d, name: two, paths: [/var], exclude: []}\n")
    out = json.loads(cli("policy", "check", str(f), "--json").stdout)
    assert [s["name"] for s in out["sources"]] == ["one", "two"]


def test_every_problem_of_a_policy_is_reported_at_once(tmp_path: Path, cli: Cli) -> None:
    f = tmp_path / "many.yaml"
    f.write_text("policy: p\nclient: c\nvault: /v\nschedule: 'every day'\nretention: {keep_last: 0}\n"
                 "sources:\n  - {name: a, plugin: files, paths: [relative]}\n  - {name: b, plugin: nosuch}\n"
                 "  - {name: c, plugin: files, paths: [/x], password: hunter2}\n")
    p = cli("policy", "check", str(f), check=False)
    assert p.returncode == 6
    lines = p.stderr.splitlines()
    assert all(x.startswith(f"dobaas: error: {f}:") for x in lines), lines
    for where in (":4: schedule", ":5: retention.keep_last", ":7: sources.0.paths", ":8: sources.1.plugin",
                  ":9: sources.2.password"):
        assert any(where in x for x in lines), (where, lines)


def test_policy_check_finds_what_run_would_fail_on(tmp_path: Path, cli: Cli) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("policy: p\nclient: c\nvault: /v\npassphrase_file: /nonexistent/pass\nsources:\n"
                 "  - {name: a, plugin: files, paths: [/nonexistent/data]}\n"
                 "  - {name: s, plugin: shares, url: 'smb://h/s', username: u, password_env: NOT_SET_ANYWHERE}\n")
    p = cli("policy", "check", str(f), check=False)
    assert p.returncode == 6
    assert "passphrase_file /nonexistent/pass" in p.stderr and "NOT_SET_ANYWHERE" in p.stderr
    assert "/nonexistent/data" not in p.stderr  # paths are looked at with --discover only
    p = cli("policy", "check", str(f), "--discover", check=False)
    assert p.returncode == 6 and "source a: /nonexistent/data: no such file or directory" in p.stderr, p.stderr


def _policy(d: Path, name: str, schedule: str, **extra: object) -> None:
    body = f"policy: {name}\nclient: acme\nvault: /tmp/unused\nschedule: '{schedule}'\n"
    body += "".join(f"{k}: {json.dumps(v)}\n" for k, v in extra.items())
    (d / f"{name}.yaml").write_text(body + f"sources:\n  - {{name: {name}-src, plugin: files, paths: [/x]}}\n")


def test_daemon_skips_what_cannot_run_and_survives_what_a_run_raises(tmp_path: Path, cli: Cli) -> None:
    _policy(tmp_path, "never", "0 0 30 2 *")
    (tmp_path / "bomb.yaml").write_text(HOSTILE["billion laughs"][0])
    _policy(tmp_path, "crashes", "0 * * * *")
    _policy(tmp_path, "good", "30 * * * *", retry={"attempts": 20, "delay_minutes": 1440})
    start = datetime(2026, 11, 26, 12, 0).astimezone()
    clock = FakeClock(start)
    ran: list[str] = []

    class Failed:
        def __init__(self, name: str) -> None:
            self.source, self.status = name, "failed"

    def runner(p, trigger, only, abort):  # type: ignore[no-untyped-def]
        ran.append(p.policy)
        if p.policy == "crashes":
            raise RuntimeError("a plugin bug")
        return type("Report", (), {"sources": [Failed("good-src")]})()

    s = Scheduler(str(tmp_path), runner, clock=clock, catch_up=False)
    s.load(first=True)
    assert sorted(s.entries) == ["crashes", "good"]
    while clock.now() < start + timedelta(days=30):  # retries back off to the one-week ceiling, no overflow
        s.step()
    assert ran.count("crashes") >= 24 * 29 and ran.count("good") >= 24 * 29
    s.reload_requested = True  # SIGHUP: the same skipping
    s.step()
    assert sorted(s.entries) == ["crashes", "good"]
    assert sorted(next_runs(str(tmp_path))) == ["crashes", "good"]
    p = cli("status", "--policies", str(tmp_path), "--json", check=False)
    assert p.returncode == 0, p.stderr
