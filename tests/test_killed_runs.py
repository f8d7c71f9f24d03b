"""A run killed with SIGKILL: its job stays in the history (``interrupted``, found by the next start), its vault
lock is removed by the next command, and the next run succeeds."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Cli

pytestmark = [pytest.mark.files, pytest.mark.cli]


def test_killed_run_leaves_an_interrupted_job_and_no_lock(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(os.urandom(256 * 1024))
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\nbandwidth_limit: 1MiB/s\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{src}']}}\n")
    env = Cli({"DOBAAS_CATALOG": str(tmp_path / "cat.db")})
    run = env.popen("run", str(pol))

    def jobs() -> list[dict]:
        p = env("jobs", "--json", check=False)
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []

    deadline = time.monotonic() + 60
    while not [j for j in jobs() if j["status"] == "running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jobs() and jobs()[0]["status"] == "running" and jobs()[0]["holder"]["pid"] == run.pid
    assert list((cli_vault / "locks").iterdir())
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=30)

    pol.write_text(pol.read_text().replace("bandwidth_limit: 1MiB/s\n", ""))
    res = json.loads(env("run", str(pol), "--json").stdout)["sources"][0]
    assert res["status"] == "ok" and res["files"] == 40
    rows = jobs()
    assert [r["status"] for r in rows] == ["ok", "interrupted"], rows
    assert "the run stopped without finishing" in rows[1]["errors"][0]
    assert list((cli_vault / "locks").iterdir()) == []  # the killed run's lock went with the next command
    assert json.loads(env("verify", "--vault", str(cli_vault), "--json").stdout)["ok"]
