"""Run a policy once: every source in turn, each its own consistent capture and snapshot. A source that fails
does not stop the others; the catalog is updated after each snapshot is published (the vault stays the truth:
a catalog failure is a warning, and ``catalog rebuild`` repairs it)."""

from __future__ import annotations

import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from orchestrator.backup.abort import AbortSignal
from orchestrator.backup.session import BackupSession
from orchestrator.cbt.chunker import Chunker
from orchestrator.cbt.image import capture_image
from orchestrator.cbt.listing_cache import ListingCache
from orchestrator.cbt.listing_cache import default_dir as listing_cache_dir
from orchestrator.cbt.stream import capture_stream
from orchestrator.cbt.tree import TreeCapture, capture_tree
from orchestrator.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, DobaasError, WindowClosed
from orchestrator.plugin import registry
from orchestrator.plugin.base import CaptureContext
from orchestrator.plugin.hooks import HookFailed, run_hooks
from orchestrator.plugin.streams import ByteStream, CarriedItem, ImageStream, TreeStream
from orchestrator.policy.model import Policy
from orchestrator.vault.repository import Vault
from orchestrator.vault.tree import iter_tree

if TYPE_CHECKING:  # the catalog (SQLAlchemy) is imported where a run records into it, not here
    from orchestrator.catalog.db import Catalog

log = logging.getLogger(__name__)



@dataclass
class SourceResult:
    source: str
    plugin: str
    status: str = "ok"  # ok | partial | failed | interrupted (backup window closed)
    snapshot: str | None = None
    mode: str = ""
    consistency: str = ""
    bytes_read: int = 0
    bytes_stored: int = 0
    bytes_new: int = 0  # plaintext bytes of chunks the vault did not have: the change volume
    files: int = 0
    files_read: int = 0
    files_unchanged: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    policy: str
    client: str
    sources: list[SourceResult]
    copy: dict | None = None  # the copy_to vault's outcome (copy_run.copy_after_run)

    @property
    def exit_code(self) -> int:
        if any(s.status in ("failed", "interrupted") for s in self.sources):
            return EXIT_FAILED
        if self.copy is not None and self.copy["status"] != "ok":
            return EXIT_FAILED
        return EXIT_PARTIAL if any(s.status == "partial" for s in self.sources) else EXIT_OK

    def to_json(self) -> dict:
        doc = {"policy": self.policy, "client": self.client, "exit_code": self.exit_code,
               "sources": [asdict(s) for s in self.sources]}
        if self.copy is not None:
            doc["copy"] = self.copy
        return doc


ProgressFactory = Callable[[str], Callable[[int], None] | None]


def run_policy(policy: Policy, vault: Vault, catalog: Catalog | None, progress: ProgressFactory | None = None,
               only: list[str] | None = None, trigger: str = "manual", abort: AbortSignal | None = None) -> RunReport:
    """Run the policy's sources (each unit of each source: its own snapshot), ``policy.concurrency`` at a time.
    ``abort`` stops the run at the next chunk boundary (daemon stopping, window closing)."""
    check_residency(policy, vault)
    report = RunReport(policy.policy, policy.client, [])
    run_id = secrets.token_hex(8)
    # the job history is written on a thread of its own: the catalog may still be opening (in its own process,
    # while this one backs up), and the backup must not wait for it
    history = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-history")
    history.submit(_close_dead_jobs, catalog)
    tasks: list[tuple[object, str, SourceResult]] = []
    for cfg in policy.source_configs:
        if only and cfg.name not in only and not any(o.startswith(cfg.name + "/") for o in only):
            continue
        try:
            units = registry.load(cfg.plugin).units(cfg)
        except Exception as e:  # e.g. a VM named in the policy does not exist: the source fails, others run
            res = SourceResult(cfg.name, cfg.plugin, status="failed", errors=[describe_failure(e)])
            if not isinstance(e, DobaasError):
                log.error("policy %s source %s: internal error", policy.policy, cfg.name, exc_info=True)
            report.sources.append(res)
            _record_job(catalog, run_id, policy, res, datetime.now(UTC).isoformat(), trigger)
            log.error("policy %s source %s: failed %s", policy.policy, cfg.name, e)
            continue
        for unit in units:
            label = f"{cfg.name}/{unit}" if unit else cfg.name
            if not only or cfg.name in only or label in only:
                tasks.append((cfg, unit, SourceResult(label, cfg.plugin)))

    def execute(cfg, unit: str, res: SourceResult) -> bool:
        """Run one unit; True when the backup window closed during it."""
        started = datetime.now(UTC).isoformat()
        t0 = time.monotonic()
        closed = False
        job = history.submit(_start_job, catalog, run_id, policy, res, started, trigger)
        env = {"DOBAAS_POLICY": policy.policy, "DOBAAS_CLIENT": policy.client, "DOBAAS_SOURCE": cfg.name,
               "DOBAAS_UNIT": unit, "DOBAAS_PLUGIN": cfg.plugin}
        log.debug("policy %s source %s (plugin %s): starting", policy.policy, res.source, cfg.plugin)
        try:
            res.warnings.extend(run_hooks(cfg.hooks, "pre", env))
            _run_source(policy, vault, catalog, cfg, unit, res, progress(res.source) if progress else None, abort)
        except WindowClosed as e:
            res.status, res.errors, closed = "interrupted", [*res.errors, str(e)], True
        except DobaasError as e:
            res.status, res.errors = "failed", [*res.errors, str(e)]
        except Exception as e:  # a plugin's or the core's bug costs this source only, never the run or the daemon
            res.status, res.errors = "failed", [*res.errors, describe_failure(e)]
            if not isinstance(e, OSError):
                log.error("policy %s source %s: internal error", policy.policy, res.source, exc_info=True)
        except BaseException as e:  # the daemon stopping, Ctrl-C: the job is closed as interrupted, then it goes on
            res.status = "interrupted"
            res.errors = [*res.errors, f"stopped before it finished ({type(e).__name__}: {e}); nothing partial was "
                                       "published"]
            res.seconds = round(time.monotonic() - t0, 3)
            _record_job(catalog, run_id, policy, res, started, trigger, job.result())
            raise
        res.warnings.extend(run_hooks(cfg.hooks, "post", {**env, "DOBAAS_STATUS": res.status,
                                                          "DOBAAS_SNAPSHOT": res.snapshot or "",
                                                          "DOBAAS_ERRORS": str(len(res.errors))}))
        res.seconds = round(time.monotonic() - t0, 3)
        _record_job(catalog, run_id, policy, res, started, trigger, job.result())
        if res.status == "failed":
            log.error("policy %s source %s: failed: %s", policy.policy, res.source, "; ".join(res.errors))
        else:
            log.info("policy %s source %s: %s, snapshot %s (%s, %s), read %d B, stored %d B, %d file(s) (%d read, "
                     "%d unchanged), %d warning(s), %.1f s", policy.policy, res.source, res.status,
                     (res.snapshot or "-")[:12], res.mode or "-", res.consistency or "-", res.bytes_read,
                     res.bytes_stored, res.files, res.files_read, res.files_unchanged, len(res.warnings), res.seconds)
            for w in res.warnings:
                log.debug("policy %s source %s: warning: %s", policy.policy, res.source, w)
        return closed

    penv = {"DOBAAS_POLICY": policy.policy, "DOBAAS_CLIENT": policy.client}
    try:
        try:
            policy_warnings = run_hooks(policy.hooks, "pre", penv)
        except HookFailed as e:  # the policy's pre hook failed: no source runs, each says why in its job
            for _cfg, _unit, res in tasks:
                res.status, res.errors = "failed", [str(e)]
                report.sources.append(res)
                _record_job(catalog, run_id, policy, res, datetime.now(UTC).isoformat(), trigger)
            policy_warnings = []
        else:
            _execute_all(policy, tasks, execute, report, abort)
            published = [s.snapshot for s in report.sources if s.snapshot and s.status in ("ok", "partial")]
            if policy.copy_to is not None and published:
                from orchestrator.backup.copy_run import copy_after_run

                report.copy = copy_after_run(policy, vault, published, snapshot_names(policy))
        status = "failed" if any(s.status in ("failed", "interrupted") for s in report.sources) else \
            ("partial" if any(s.status == "partial" for s in report.sources) else "ok")
        policy_warnings += run_hooks(policy.hooks, "post", {**penv, "DOBAAS_STATUS": status})
        for s in report.sources:
            s.warnings.extend(policy_warnings)
    finally:
        history.shutdown(wait=True)
        _warn_if_nearly_full(vault, report)
        registry.end_run({cfg.plugin for cfg in policy.source_configs})
    return report



def describe_failure(e: Exception) -> str:
    """One line for the job history and the report: our own errors say what went wrong; a system error names
    the file; anything else is an internal error (its traceback is in the log)."""
    if isinstance(e, DobaasError):
        return str(e)
    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    return f"internal error: {type(e).__name__}: {e} (traceback in the log)"


def _warn_if_nearly_full(vault: Vault, report: RunReport) -> None:
    """A vault on its own file system (a remote tenant's subscribed volume) warns from 90% used."""
    usage = getattr(vault.backend, "usage", None)
    if usage is None or not report.sources:
        return
    try:
        used, total = usage()
    except Exception:
        return
    if total and used >= 0.9 * total:
        w = (f"the vault's space is {100 * used / total:.0f}% used ({used / 2**30:.2f} of {total / 2**30:.2f} GiB): "
             "the subscribed volume is nearly exhausted; new data is refused at 100%")
        for r in report.sources:
            r.warnings.append(w)
        log.warning("%s", w)


def _execute_all(policy: Policy, tasks: list, execute: Callable, report: RunReport,
                 abort: AbortSignal | None) -> None:
    if policy.concurrency <= 1 or len(tasks) <= 1:
        for cfg, unit, res in tasks:
            if abort is not None:
                try:
                    abort.check()
                except WindowClosed:
                    break  # closed between two sources: the rest wait for the next window
            report.sources.append(res)
            if execute(cfg, unit, res):
                break  # the window is over: the remaining sources wait for the next one
        return
    started: list[SourceResult] = []

    def worker(cfg, unit: str, res: SourceResult) -> bool:
        if abort is not None and abort.fired:
            return False  # the run is stopping: this source waits for the next one
        started.append(res)
        return execute(cfg, unit, res)

    with ThreadPoolExecutor(max_workers=policy.concurrency, thread_name_prefix="source") as pool:
        futures = [pool.submit(worker, *t) for t in tasks]
        for f in futures:
            f.result()  # a stop request raised in a worker ends the run here
    report.sources.extend(r for _c, _u, r in tasks if r in started)
    if abort is not None:
        try:
            abort.check()
        except WindowClosed:
            pass


def check_residency(policy: Policy, vault: Vault) -> None:
    """Data stays in France unless the client agreed in writing: refused before any byte leaves."""
    where = vault.config.location
    if where != "FR" and not policy.residency_consent:
        raise DobaasError(f"vault {vault.backend.location} is located in {where}, outside France: the contract keeps "
                          "backups in France unless the client agreed in writing; add residency_consent: "
                          "'<reference of that agreement>' to the policy")


def _close_dead_jobs(catalog: Catalog | None) -> None:
    """Jobs left ``running`` by a run that was killed become ``interrupted`` (said in the log)."""
    if catalog is None:
        return
    try:
        n = catalog.close_dead_jobs()
    except Exception as e:
        log.warning("could not look for interrupted jobs in the catalog: %s", e)
        return
    if n:
        log.warning("%d job(s) of an earlier run were interrupted (the process was killed); marked so", n)


def _start_job(catalog: Catalog | None, run_id: str, policy: Policy, res: SourceResult, started: str,
               trigger: str) -> int | None:
    """The job's row, ``running`` while it runs: a killed run leaves it for the next start to close."""
    if catalog is None:
        return None
    try:
        from orchestrator.process_identity import me

        return int(catalog.start_job(me(), run_id=run_id, policy=policy.policy, client=policy.client,
                                     source=res.source, plugin=res.plugin, trigger=trigger, started=started))
    except Exception as e:  # history is best effort; the backup goes on
        res.warnings.append(f"job history not recorded ({e})")
        return None


def _record_job(catalog: Catalog | None, run_id: str, policy: Policy, res: SourceResult, started: str,
                trigger: str, job_id: int | None = None) -> None:
    if catalog is None:
        return
    try:
        catalog.record_job(job_id=job_id, run_id=run_id, policy=policy.policy, client=policy.client, source=res.source,
                           plugin=res.plugin, trigger=trigger, status=res.status, started=started,
                           ended=datetime.now(UTC).isoformat(), snapshot_id=res.snapshot,
                           bytes_read=res.bytes_read, bytes_stored=res.bytes_stored, files=res.files,
                           warnings=res.warnings[:1000], errors=res.errors[:1000])
    except Exception as e:  # history is best effort; the snapshot itself is safe in the vault
        res.warnings.append(f"job history not recorded ({e})")


def snapshot_names(policy: Policy) -> Callable[[str], bool]:
    """Whether a snapshot name belongs to one of the policy's sources (``client/source`` or, for sources made of
    units such as VMs, ``client/source/unit``): what retention applies to."""
    prefixes = [f"{policy.client}/{c.name}" for c in policy.source_configs]
    return lambda name: any(name == p or name.startswith(p + "/") for p in prefixes)


def _run_source(policy: Policy, vault: Vault, catalog: Catalog | None, cfg, unit: str,
                res: SourceResult, progress: Callable[[int], None] | None, abort: AbortSignal | None = None) -> None:
    plugin = registry.load(cfg.plugin)
    name = f"{policy.client}/{res.source}"
    lineage = hashlib.blake2s(f"{vault.config.id}\0{name}".encode(), digest_size=6).hexdigest()
    captures = []
    cache = ListingCache(listing_cache_dir(), vault.cipher.master.mac_key)
    with BackupSession(vault, name, abort=abort) as s:
        checkpoint = s.parent.meta.get("checkpoint") if s.parent else None
        with plugin.capture(cfg, checkpoint, CaptureContext(unit, lineage)) as cap:
            res.consistency = cap.consistency
            res.warnings.extend(cap.warnings)
            items = []
            for stream in cap.streams:
                parent_item = s.parent_item(stream.name)
                if isinstance(stream, TreeStream):
                    tc = capture_tree(s.writer, stream.source, stream.name, vault.config.chunker, parent_item,
                                      progress=progress, cache=cache, cache_slot=cache.slot(name, stream.name))
                    items.append(tc.item)
                    captures.append(tc)
                    st = tc.stats
                    res.files += st.files
                    res.files_read += st.files_read
                    res.files_unchanged += st.files_unchanged
                    res.bytes_read += st.bytes_read
                    res.errors.extend(st.errors)
                    res.warnings.extend(st.warnings)
                elif isinstance(stream, ImageStream):
                    ic = capture_image(s.writer, stream.reader, stream.name, vault.config.block_size, parent_item,
                                       stream.changed_extents, progress=progress)
                    items.append(ic.item)
                    res.bytes_read += ic.stats.bytes_read
                    res.warnings.extend(ic.warnings)
                elif isinstance(stream, ByteStream):
                    sc = capture_stream(s.writer, stream.reader, stream.name, Chunker.from_config(vault.config.chunker),
                                        progress=progress)
                    items.append(sc.item)
                    res.bytes_read += sc.bytes_read
                elif isinstance(stream, CarriedItem):
                    carried = s.parent_item(stream.from_item)
                    if carried is None:
                        raise DobaasError(f"the previous snapshot has no item {stream.from_item} to carry")
                    items.append({**carried, "name": stream.name})
            if cap.finish is not None:  # every stream is stored: the plugin's last word before the commit
                cap.checkpoint = cap.finish()
            s.warnings.extend(res.warnings)
            meta = {"client": policy.client, "source": res.source, "plugin": cfg.plugin, "policy": policy.policy,
                    "checkpoint": cap.checkpoint, "consistency": cap.consistency, "stored_in": vault.config.location,
                    **({"residency_consent": policy.residency_consent} if policy.residency_consent else {}),
                    **cap.meta}
            seen = len(s.warnings)
            snap = s.commit(items, meta, {"errors": res.errors, "files": res.files, "bytes_read": res.bytes_read})
            res.warnings.extend(s.warnings[seen:])  # what the commit found (damaged data still used)
        for tc in captures:  # written while the catalog records the snapshot (a wait on another process)
            if tc.listing is not None:
                cache.store_later(tc.item, cache.slot(name, tc.item["name"]), tc.listing)
        res.bytes_stored = s.writer.stats.bytes_written
        res.bytes_new = s.writer.stats.raw_bytes_new
    res.snapshot = snap.id
    res.mode = "incremental" if snap.parent else "full"
    if res.errors:
        res.status = "partial"
    if catalog is not None:
        try:
            parent_trees = {i["name"] for i in s.parent.items if i["type"] == "tree"} if s.parent else set()
            record_in_catalog(catalog, vault, snap, captures, parent_trees)
        except Exception as e:  # the snapshot is safe in the vault; the catalog can be rebuilt from it
            res.warnings.append(f"catalog not updated ({e}); run 'dobaas catalog rebuild'")
    for tc in captures:
        tc.changed.close()
    cache.wait()  # the listing cache was written meanwhile (an unfinished one is never used: written, then renamed)


STAGE_ROWS = 5000  # catalog rows sent per message


def record_in_catalog(catalog: Catalog, vault: Vault, snap, captures: list[TreeCapture],
                      parent_trees: set[str]) -> None:
    """Record from the capture's changes when the catalog holds the parent snapshot and the parent had the same
    tree items (no re-reading of 100,000 unchanged entries), else from the full listing in the vault."""
    from orchestrator.catalog.rows import display_path, entry_values

    trees = [i for i in snap.items if i["type"] == "tree"]
    delta_ok = (snap.parent is not None and catalog.latest_of_source(snap) == snap.parent
                and parent_trees == {i["name"] for i in trees}
                and len(captures) == len(trees) and all(c.relative_to_parent for c in captures))
    rows: Iterable[tuple]
    if delta_ok or (len(captures) == len(trees) and not any(c.relative_to_parent for c in captures)):
        rows = (r for c in captures for r in entry_values(c.item, c.changed))  # full captures: all in ``changed``
    else:
        rows = (r for item in trees
                for r in entry_values(item, iter_tree(item, lambda c: vault.read_chunk(c, "listing"))))
    it = iter(rows)
    while part := list(itertools.islice(it, STAGE_ROWS)):  # parts: never 100,000 rows built at once
        catalog.stage_entries(snap.id, part)
    if delta_ok:
        deleted = [display_path(c.item.get("root", c.item["name"]), p)[0] for c in captures for p in c.deleted]
        catalog.record_delta(snap, vault.backend.location, None, deleted)
    else:
        catalog.record_snapshot(snap, vault.backend.location)
