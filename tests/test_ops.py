"""Operator tools: key management without a terminal, and the passphrase from a command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import PASS, Cli, assert_one_line_error

pytestmark = pytest.mark.ops


def test_keys_are_managed_without_a_terminal(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    v = str(cli_vault)
    keys = json.loads(cli("vault", "key", "list", "--vault", v, "--json").stdout)
    assert len(keys) == 1 and keys[0]["current"] and "salt" not in json.dumps(keys)
    new_file = tmp_path / "new.pass"
    new_file.write_text("a second passphrase\n")
    added = json.loads(cli("vault", "key", "add", "--vault", v, "--new-passphrase-file", str(new_file),
                           "--json").stdout)["added"]
    assert cli("snapshots", "--vault", v, passphrase="a second passphrase").returncode == 0
    first = keys[0]["name"].removeprefix("keys/")
    assert_one_line_error(cli("vault", "key", "remove", first[:8], "--vault", v, check=False), 2,
                          "current passphrase opened")
    by_second = Cli({"SECOND": "a second passphrase"})
    by_second("vault", "key", "remove", first[:8], "--vault", v, passphrase="a second passphrase")
    assert_one_line_error(cli("snapshots", "--vault", v, check=False), 4, "wrong passphrase")
    # passwd: the current passphrase changes; the old key file goes only once the new one opens the vault
    by_second.env["THIRD"] = "third passphrase"
    out = json.loads(by_second("vault", "key", "passwd", "--vault", v, "--new-passphrase-env", "THIRD", "--json",
                               passphrase="a second passphrase").stdout)
    assert out["removed"] == added
    assert cli("snapshots", "--vault", v, passphrase="third passphrase").returncode == 0
    assert_one_line_error(cli("snapshots", "--vault", v, passphrase="a second passphrase", check=False), 4)
    assert_one_line_error(cli("vault", "key", "add", "--vault", v, passphrase="third passphrase", check=False), 2,
                          "--new-passphrase-file")


def test_the_passphrase_can_come_from_a_command(tmp_path: Path, cli_vault: Path) -> None:
    script = tmp_path / "pass.sh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{PASS}'\n")
    os.chmod(script, 0o755)
    ok = Cli({"DOBAAS_PASSPHRASE_COMMAND": f"{script} --unused-arg"})
    assert ok("snapshots", "--vault", str(cli_vault), passphrase=None).returncode == 0
    bad = Cli({"DOBAAS_PASSPHRASE_COMMAND": "/bin/false"})
    assert_one_line_error(bad("snapshots", "--vault", str(cli_vault), passphrase=None, check=False), 6,
                          "DOBAAS_PASSPHRASE_COMMAND", "exited 1")


def test_diff_of_two_snapshots_trees_and_images(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    v = str(cli_vault)
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (src / "docs" / name).write_text(name * 100)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {v}\nsources:\n  - {{name: docs, plugin: files, paths: ['{src}']}}\n")
    first = json.loads(cli("run", str(pol), "--json").stdout)["sources"][0]["snapshot"]
    (src / "docs" / "a.txt").write_text("changed")
    (src / "docs" / "b.txt").unlink()
    (src / "docs" / "e.txt").write_text("new")
    os.chmod(src / "docs" / "c.txt", 0o600)
    second = json.loads(cli("run", str(pol), "--json").stdout)["sources"][0]["snapshot"]
    d = json.loads(cli("diff", first[:12], second[:12], "--vault", v, "--json").stdout)
    (tree,) = d["items"]
    assert tree["added"] == ["docs/e.txt"] and tree["removed"] == ["docs/b.txt"]
    assert tree["modified"] == ["docs/a.txt"] and "docs/c.txt" in tree["metadata_only"]
    sub = json.loads(cli("diff", first[:12], second[:12], f"{src}/docs/a.txt", "--vault", v, "--json").stdout)
    assert sub["items"][0]["modified"] == ["docs/a.txt"] and sub["items"][0]["added"] == []
    img = tmp_path / "d.img"
    img.write_bytes(os.urandom(256 * 1024))
    i1 = json.loads(cli("backup", "image", str(img), "--vault", v, "--name", "img", "--json").stdout)["id"]
    with open(img, "r+b") as f:
        f.seek(100_000)
        f.write(b"x" * 10)
    i2 = json.loads(cli("backup", "image", str(img), "--vault", v, "--name", "img", "--json").stdout)["id"]
    (image,) = json.loads(cli("diff", i1[:12], i2[:12], "--vault", v, "--json").stdout)["items"]
    assert image["changed_ranges"] == [[98304, 4096]] and image["changed_bytes"] == 4096


def test_run_dry_run_checks_everything_and_writes_nothing(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    v = str(cli_vault)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {v}\nsources:\n  - {{name: docs, plugin: files, paths: ['{src}']}}\n")
    before = sorted(p.name for p in cli_vault.rglob("*"))
    rep = json.loads(cli("run", str(pol), "--dry-run", "--json").stdout)
    assert rep["ok"] and rep["sources"][0]["snapshots"] == ["c/docs"] and rep["vault"]["country"] == "FR"
    assert sorted(p.name for p in cli_vault.rglob("*")) == before  # not even a lock
    assert json.loads(cli("jobs", "--json").stdout) == []
    pol.write_text(pol.read_text().replace(str(src), "/nonexistent/place"))
    p = cli("run", str(pol), "--dry-run", "--json", passphrase="wrong", check=False)
    rep = json.loads(p.stdout)
    assert p.returncode == 1 and not rep["ok"]
    assert any("/nonexistent/place" in x for x in rep["problems"]) and any("wrong passphrase" in x
                                                                            for x in rep["problems"])


def test_hooks_run_before_and_after_with_the_job_described(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    log = tmp_path / "hooks.log"
    rec = tmp_path / "record.sh"
    rec.write_text(f"#!/bin/sh\necho \"$1 $DOBAAS_PHASE $DOBAAS_SOURCE $DOBAAS_STATUS ${{DOBAAS_SNAPSHOT:+snap}}\" "
                   f">> {log}\n")
    fail = tmp_path / "fail.sh"
    fail.write_text("#!/bin/sh\necho 'application would not stop' >&2\nexit 3\n")
    for f in (rec, fail):
        os.chmod(f, 0o755)

    def policy(source_hooks: str, policy_hooks: str = "") -> Path:
        p = tmp_path / "p.yaml"
        p.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\n{policy_hooks}sources:\n"
                     f"  - {{name: docs, plugin: files, paths: ['{src}'], hooks: {source_hooks}}}\n")
        return p

    ok = policy(f"{{pre: ['{rec} src'], post: ['{rec} src']}}", f"hooks: {{pre: ['{rec} pol'], post: ['{rec} pol']}}\n")
    res = json.loads(cli("run", str(ok), "--json").stdout)["sources"][0]
    assert res["status"] == "ok"
    assert _lines(log) == ["pol pre", "src pre docs", "src post docs ok snap", "pol post ok"]
    # a failing pre hook fails the source: nothing is captured, the post hook still says so
    log.unlink()
    bad = policy(f"{{pre: ['{fail}'], post: ['{rec} src']}}")
    p = cli("run", str(bad), "--json", check=False)
    res = json.loads(p.stdout)["sources"][0]
    assert p.returncode == 1 and res["status"] == "failed" and res["snapshot"] is None
    assert "exited 3: application would not stop" in res["errors"][0]
    assert _lines(log) == ["src post docs failed"]
    # on_error: continue makes it a warning
    cont = policy(f"{{pre: ['{fail}'], on_error: continue}}")
    res = json.loads(cli("run", str(cont), "--json").stdout)["sources"][0]
    assert res["status"] == "ok" and any("application would not stop" in w for w in res["warnings"])
    # the policy's own failing pre hook: no source runs
    stop = policy("{}", f"hooks: {{pre: ['{fail}']}}\n")
    p = cli("run", str(stop), "--json", check=False)
    assert p.returncode == 1 and json.loads(p.stdout)["sources"][0]["errors"][0].startswith("pre hook")



def test_a_hook_printing_bytes_that_are_not_utf8_does_not_fail_the_job(tmp_path: Path, cli: Cli,
                                                                       cli_vault: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    noisy = tmp_path / "noisy.sh"
    noisy.write_bytes(b"#!/bin/sh\nprintf 'caf\\351 \\377\\n'\nprintf '\\376 ferm\\351\\n' >&2\nexit ${1:-0}\n")
    os.chmod(noisy, 0o755)
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\nsources:\n  - {{name: docs, plugin: files, "
                   f"paths: ['{src}'], hooks: {{pre: ['{noisy}'], post: ['{noisy} 2']}}}}\n")
    res = json.loads(cli("run", str(pol), "--json", check=False).stdout)["sources"][0]
    assert res["status"] == "ok" and res["snapshot"]
    assert any(w.startswith("post hook") and "exited 2: \ufffd ferm\ufffd" in w for w in res["warnings"]), res

def _lines(path: Path) -> list[str]:
    return [" ".join(line.split()) for line in path.read_text().splitlines()]


def test_stats_per_source_and_day_against_the_change_budget(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(os.urandom(50_000))
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{src}']}}\n")
    cli("run", str(pol))
    (src / "f0").write_bytes(os.urandom(50_000))  # 5% of the initial volume: over the 0.2% budget
    cli("run", str(pol))
    out = json.loads(cli("stats", "--vault", str(cli_vault), "--json").stdout)
    (day,) = out["days"]  # both runs today
    assert day["source"] == "c/docs" and day["snapshots"] == 2
    assert day["read"] >= 1_050_000 and 1_050_000 <= day["new"] <= 1_100_000
    assert day["change_rate"] > 1 and day["over_budget"]  # the first snapshot itself is all new
    assert out["vault"]["snapshots"] == 2 and out["vault"]["stored_bytes"] > 1_000_000
    text = cli("stats", "--vault", str(cli_vault), "--source", "docs").stdout
    assert "c/docs" in text and "OVER BUDGET" in text


def test_the_daemon_exports_prometheus_metrics(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    import signal
    import socket
    import time
    import urllib.request

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    pols = tmp_path / "policies"
    pols.mkdir()
    (pols / "p.yaml").write_text(f"policy: p\nclient: acme\nvault: {cli_vault}\nschedule: '0 3 * * *'\n"
                                 f"quota: 1GiB\nsources:\n  - {{name: docs, plugin: files, paths: ['{src}']}}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    textfile = tmp_path / "dobaas.prom"
    d = cli.popen("daemon", "--policies", str(pols), "--run-now", "--metrics", f"127.0.0.1:{port}",
                  "--metrics-file", str(textfile))
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline and 'status="ok"} 1' not in text:
            time.sleep(0.3)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue
    finally:
        d.send_signal(signal.SIGTERM)
        d.communicate(timeout=60)
    labels = 'client="acme",source="docs",policy="p"'
    assert f'dobaas_last_run_status{{{labels},status="ok"}} 1' in text, text
    assert f"dobaas_last_success_timestamp_seconds{{{labels}}}" in text
    assert "# TYPE dobaas_last_run_errors gauge" in text
    written = textfile.read_text()  # written after the run: the vault's size as measured then
    assert f'dobaas_last_run_status{{{labels},status="ok"}} 1' in written
    stored = sum(f.stat().st_size for f in (cli_vault / "data").rglob("*") if f.is_file())
    assert f'dobaas_vault_stored_bytes{{client="acme",vault="{cli_vault}"}} {stored}' in written, written
    assert f'dobaas_quota_bytes{{client="acme"}} {2**30}' in written
    assert f'dobaas_quota_used_ratio{{client="acme"}} {stored / 2**30:.6f}' in written


def test_every_kind_of_restore_is_in_the_audit_trail(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    img = tmp_path / "d.img"
    img.write_bytes(os.urandom(64 * 1024))
    sid = json.loads(cli("backup", "image", str(img), "--vault", str(cli_vault), "--name", "d", "--json").stdout)["id"]
    out = tmp_path / "out.img"
    cli("restore", "image", sid[:12], "--vault", str(cli_vault), "--output", str(out))
    assert cli("restore", "image", sid[:12], "--vault", str(cli_vault), "--output", str(out),
               check=False).returncode == 2  # exists: refused, and recorded as failed
    trail = json.loads(cli("catalog", "restores", "--json").stdout)
    assert [(r["snapshot_id"], json.loads(r["paths"]), r["status"]) for r in trail] == [
        (sid, ["image"], "ok"), (sid, ["image"], "failed")]
    assert json.loads(trail[0]["detail"])["bytes"] == 64 * 1024


def test_completion_and_the_manual_come_from_the_commands(cli: Cli) -> None:
    import subprocess

    from tests.conftest import DOBAAS

    man = cli("man").stdout
    for command in ("vault key passwd", "restore mssql", "diff", "stats", "run", "daemon"):
        assert f".SS dobaas {command}" in man, command
    assert "\\-\\-new\\-passphrase\\-file" in man and ".SH EXIT STATUS" in man
    for shell in ("bash", "zsh", "fish"):
        assert "_DOBAAS_COMPLETE" in cli("completion", shell).stdout
    env = {**os.environ, "COMP_WORDS": "dobaas vault ke", "COMP_CWORD": "2", "_DOBAAS_COMPLETE": "bash_complete"}
    p = subprocess.run([DOBAAS], env=env, capture_output=True, text=True)
    assert "plain,key" in p.stdout.split(), p.stdout


def test_the_monthly_report_in_french_as_pdf_and_html(tmp_path: Path, cli: Cli, cli_vault: Path) -> None:
    import subprocess
    from datetime import datetime

    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: acme\nvault: {cli_vault}\nquota: 1GiB\nsources:\n"
                   f"  - {{name: docs, plugin: files, paths: ['{src}']}}\n"
                   f"  - {{name: gone, plugin: files, paths: ['{tmp_path}/nothing-here']}}\n")
    first = json.loads(cli("run", str(pol), "--json", check=False).stdout)["sources"][0]["snapshot"]
    (src / "f1").write_bytes(os.urandom(20_000))
    cli("run", str(pol), "--json", check=False)
    cli("restore", "files", first[:12], f"{src}/f2", "--vault", str(cli_vault), "--target", str(tmp_path / "r"))
    month = datetime.now().astimezone().strftime("%Y-%m")
    out = json.loads(cli("report", "--client", "acme", "--month", month, "--policy", str(pol), "--output",
                         str(tmp_path / "r.pdf"), "--json").stdout)
    assert out["runs"] == 4 and out["success_rate"] == 0.5 and out["restores"] == 1 and out["incidents"] == 2
    assert out["quota"] == 2**30
    png = tmp_path / "page"
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(tmp_path / "r.pdf"), str(png)], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) == 2 and all(p.stat().st_size > 10_000 for p in pages)
    cli("report", "--client", "acme", "--month", month, "--policy", str(pol), "--output", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "Rapport mensuel de sauvegarde" in page and "Taux de réussite : 50.00 %" in page
    assert page.count("data:image/png;base64,") == 3 and "195.3 Kio" in page
    cli("report", "--client", "acme", "--month", month, "--policy", str(pol), "--output", str(tmp_path / "en.html"),
        "--lang", "en")
    english = (tmp_path / "en.html").read_text()
    assert "Success rate: 50.00%" in english and "195.3 KiB" in english and " Kio" not in english


def test_one_time_zone_everywhere_with_the_offset_in_json(tmp_path: Path, cli_vault: Path) -> None:
    """Vault and catalog keep UTC; every command shows this machine's local time, with its offset in --json."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\nsources:\n  - {{name: docs, plugin: files, "
                   f"paths: ['{src}']}}\n")
    india = Cli({"TZ": "IST-5:30", "DOBAAS_CATALOG": str(tmp_path / "cat.db")})  # POSIX rule: no tzdata needed
    run = india("--log-json", "-v", "run", str(pol), "--json")
    logs = [json.loads(line) for line in run.stderr.splitlines()]
    assert logs and all(entry["time"].endswith("+05:30") for entry in logs), logs
    (snap,) = json.loads(india("snapshots", "--vault", str(cli_vault), "--json").stdout)
    assert snap["time"].endswith("+05:30"), snap
    (job,) = json.loads(india("jobs", "--json").stdout)
    assert job["started"].endswith("+05:30") and job["ended"].endswith("+05:30"), job
    listing = json.loads(india("ls", snap["id"][:12], "--json").stdout)
    assert listing["time"] == snap["time"]
    text = india("snapshots", "--vault", str(cli_vault)).stdout  # the text view: the same local wall-clock time
    assert snap["time"][:16].replace("T", " ") in text, (text, snap)


def test_each_verbosity_level_says_more(tmp_path: Path, cli_vault: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(200_000))
    pol = tmp_path / "p.yaml"
    pol.write_text(f"policy: p\nclient: c\nvault: {cli_vault}\nsources:\n  - {{name: docs, plugin: files, "
                   f"paths: ['{src}']}}\n")
    env = Cli({"DOBAAS_CATALOG": str(tmp_path / "cat.db")})
    quiet = env("run", str(pol)).stderr
    step = env("-v", "run", str(pol)).stderr
    debug = env("-vv", "run", str(pol)).stderr
    assert "INFO" not in quiet and "DEBUG" not in quiet
    assert "source docs: ok, snapshot" in step and "unchanged" in step and "DEBUG" not in step
    for said in ("vault lock", "index:", "key derivation", "snapshot", "published", "[MainThread"):
        assert said in debug, (said, debug)
    assert len(debug.splitlines()) > len(step.splitlines()) > len(quiet.splitlines())
