"""The portal's operations, shared by its pages and its JSON API, each limited to what the user may see: a client
its own tenant, a technician every tenant. What is out of scope answers NotFound, exactly as what does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import date
from typing import TYPE_CHECKING

from orchestrator.errors import BadInput
from orchestrator.portal.accounts import User
from orchestrator.portal.context import Portal

if TYPE_CHECKING:
    from collections.abc import Iterator

#: the `dobaas restore` commands a technician runs from a request, by request kind
RESTORE_COMMANDS = {"files": ("files",), "tree": ("files",), "vm": ("vm", "image"),
                    "database": ("mysql", "mssql", "oracle", "exchange", "sharepoint")}
SEARCH_LIMIT = 500


def public_snapshot(s: dict) -> dict:
    """A snapshot as the portal shows it: no vault location, no catalog internals."""
    return {"id": s["id"], "time": s["time"], "client": s["client"], "source": s["source"], "name": s["name"],
            "hostname": s["hostname"],
            "items": [{k: i.get(k) for k in ("name", "type", "root", "size", "entries")} for i in s["items"]],
            "stats": s["stats"]}


def snapshots(p: Portal, user: User, day: str | None = None, source: str | None = None,
              tenant: str | None = None) -> list[dict]:
    """Newest first; ``day`` (YYYY-MM-DD, UTC) keeps that day's; ``tenant`` narrows a technician's view."""
    if day:
        try:
            date.fromisoformat(day)
        except ValueError:
            raise BadInput(f"day {day!r}: expected YYYY-MM-DD") from None
    rows = p.catalog.snapshots(source=source, client=p.scope(user, tenant))
    if day:
        rows = [s for s in rows if s["time"][:10] == day]
    return [public_snapshot(s) for s in reversed(rows)]


def snapshot(p: Portal, user: User, snapshot_id: str) -> dict:
    return p.catalog.snapshot_of(snapshot_id, p.scope(user))


def tree(p: Portal, user: User, snapshot_id: str, path: str | None) -> list[dict]:
    snap = snapshot(p, user, snapshot_id)
    return p.catalog.ls(snap, path or None)


def search(p: Portal, user: User, pattern: str, tenant: str | None = None) -> list[dict]:
    if not pattern.strip():
        return []
    pattern = pattern.strip()
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return p.catalog.find(pattern, client=p.scope(user, tenant), limit=SEARCH_LIMIT)


def download(p: Portal, user: User, snapshot_id: str, path: str) -> tuple[str, Iterator[bytes]]:
    from orchestrator.portal.download import tar_of

    row = snapshot(p, user, snapshot_id)
    if not path:
        raise BadInput("choose a folder or a file to download")
    p.catalog.ls(row, path)  # NotFound when the path is not in this snapshot
    vault = p.tenants.vault(row["client"], row["vault"])
    return tar_of(vault, vault.resolve(row["id"]), path)


def request_restore(p: Portal, user: User, snapshot_id: str, paths: list[str], urgency: str, description: str,
                    target: str = "") -> dict:
    """A client asks for files to be put back (to their original location unless ``target``)."""
    row = snapshot(p, user, snapshot_id)
    paths = [x for x in paths if x.strip()]
    if not paths:
        raise BadInput("choose what to restore")
    for path in paths:
        p.catalog.ls(row, path)
    return p.requests.open(user, row["client"], "files", urgency, p.now(), snapshot_id=row["id"], paths=paths,
                           target=target, description=description)


def incident_action(p: Portal, user: User, reference: str, action: str, note: str = "", causes: str = "",
                    fixes: str = "") -> dict:
    """An incident's next step; a closure is also e-mailed to the client's alert recipients."""
    inc = p.incidents.act(user, reference, action, p.now(), note=note, causes=causes, fixes=fixes)
    if action == "close":
        until = inc["contest_until"][:16].replace("T", " ")
        reached = p.tenants.notify(inc["tenant"], f"[Do'BaaS] {reference} closed: {inc['title'][:120]}",
                                   f"Incident {reference} ({inc['title']}) was closed on "
                                   f"{inc['closed'][:16].replace('T', ' ')} UTC.\n{note}\n\nIf the problem is not "
                                   f"solved, contest the closure on the portal before {until} UTC; after that it "
                                   "stands accepted.")
        p.incidents.note(user, inc["id"], "notified", "e-mailed to " + (", ".join(reached) or "nobody (no alert "
                         "e-mail in the client's policies, or the relay failed: see the portal's log)"), p.now())
        inc = p.incidents.get(user, reference, p.now())
    return inc


def run_restore(p: Portal, user: User, request_id: int, command: str, arguments: list[str]) -> None:
    """Run `dobaas restore COMMAND SNAPSHOT ARGUMENTS…` for a request in progress, in the background, with the
    tenant's vault and passphrase; its output is attached to the request when it ends."""
    if not user.staff:
        raise BadInput("a technician runs restores")
    req = p.requests.get(user, request_id)
    if req["state"] != "in_progress":
        raise BadInput("start the request (in progress) before running its restore")
    if command not in RESTORE_COMMANDS.get(req["kind"], ()):
        raise BadInput(f"a {req['kind']} request runs one of: {', '.join(RESTORE_COMMANDS[req['kind']])}")
    if not req["snapshot_id"]:
        raise BadInput("the request names no snapshot")
    row = p.catalog.snapshot_of(req["snapshot_id"], req["tenant"])
    policy = p.tenants.policy_for_vault(req["tenant"], row["vault"])
    # secrets through the environment, never the command line (which any local user can read)
    env = {**os.environ, "DOBAAS_PASSPHRASE": policy.passphrase() or os.environ.get("DOBAAS_PASSPHRASE", ""),
           "DOBAAS_CATALOG": p.catalog.url}
    argv = [sys.executable, "-m", "orchestrator.cli", "restore", command, row["id"], *arguments,
            "--vault", row["vault"]]
    shown = " ".join(["dobaas", "restore", command, row["id"][:12], *arguments])
    p.requests.attach_log(user, request_id, f"$ {shown}\n(started)", p.now())

    def work() -> None:
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, errors="replace", check=False)
            text = f"$ {shown}\n{done.stdout}{done.stderr}exit status {done.returncode}"
        except OSError as e:
            text = f"$ {shown}\ncould not start: {e}"
        p.requests.attach_log(user, request_id, text, p.now())

    threading.Thread(target=work, name=f"portal-restore-{request_id}", daemon=True).start()


