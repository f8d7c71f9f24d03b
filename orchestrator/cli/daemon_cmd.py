"""``dobaas daemon``: run the policies of a directory on their schedules until stopped."""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime

import click

from orchestrator.cli.common import catalog_option

log = logging.getLogger("dobaas.daemon")


@click.command("daemon")
@click.option("--policies", "directory", required=True, type=click.Path(file_okay=False, exists=True),
              help="Directory of policy files (*.yaml).")
@click.option("--catch-up/--no-catch-up", default=True, show_default=True,
              help="Run once at start a policy whose scheduled run was missed while the daemon was down.")
@click.option("--run-now", is_flag=True, help="Run every policy once at start, then follow the schedules.")
@click.option("--max-concurrent", default=1, show_default=True, type=click.IntRange(1, 32),
              help="Policies run at once (a policy's own sources: its `concurrency:` field).")
@click.option("--metrics", "metrics_listen", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9465).")
@click.option("--metrics-file", type=click.Path(dir_okay=False),
              help="Also write them to this file after each run (node_exporter's textfile collector).")
@catalog_option
def daemon_cmd(directory: str, catch_up: bool, run_now: bool, max_concurrent: int, metrics_listen: str | None,
               metrics_file: str | None, catalog_url: str | None) -> None:
    """Run every policy of DIRECTORY on its cron schedule. SIGHUP reloads the policies; SIGTERM stops (a run
    in progress is aborted without publishing anything partial). Use --log-json for machine-readable logs."""
    from orchestrator.alerts.notify import deliver, notify_after_run, stale
    from orchestrator.backup.abort import AbortSignal
    from orchestrator.backup.runner import run_policy, snapshot_names
    from orchestrator.catalog.db import Catalog, to_url
    from orchestrator.cli.common import read_passphrase
    from orchestrator.errors import AppendOnly, UsageError, WindowClosed
    from orchestrator.policy.model import Policy
    from orchestrator.policy.window import window_state
    from orchestrator.scheduler.daemon import Scheduler
    from orchestrator.vault.prune import prune
    from orchestrator.vault.repository import Vault

    if not ("DOBAAS_PASSPHRASE" in os.environ or "DOBAAS_PASSPHRASE_FILE" in os.environ):
        log.info("no DOBAAS_PASSPHRASE(_FILE): each policy must name passphrase_env or passphrase_file")

    catalogs: dict[str | None, Catalog] = {}
    catalogs_lock = threading.Lock()

    def catalog_for(policy: Policy) -> Catalog:
        """One Catalog (engine, migrations done once) per URL, shared by the policies running at once."""
        url = to_url(policy.catalog) if policy.catalog else (to_url(catalog_url) if catalog_url else None)
        with catalogs_lock:
            if url not in catalogs:
                catalogs[url] = Catalog(url)
            return catalogs[url]

    def run_one(policy: Policy, trigger: str, only: list[str] | None, abort: AbortSignal):
        try:
            passphrase = policy.passphrase() or read_passphrase()
        except UsageError:
            raise UsageError(f"policy {policy.policy}: no passphrase (passphrase_env/_file or "
                             "DOBAAS_PASSPHRASE)") from None
        vault = Vault.open(policy.backend(), passphrase)
        catalog = catalog_for(policy)
        end = None
        if policy.window:
            inside, end, _next = window_state(policy.window, datetime.now().astimezone())
            if not inside:
                log.info("policy %s: outside its window %s, not run now", policy.policy, policy.window)
                return None
        if end is not None:
            at = end

            def closed() -> WindowClosed:
                return WindowClosed(f"the backup window closed at {at:%H:%M:%S}; the next run resumes from here")

            abort.fire_at(end, datetime.now().astimezone(), closed)
        try:
            report = run_policy(policy, vault, catalog, None, only, trigger, abort)
        finally:
            abort.cancel()
        try:
            notify_after_run(policy, report, catalog, vault)
        except Exception as e:  # the snapshots are safe; alerts that cannot be evaluated are logged
            log.error("policy %s: alerts not evaluated (%s: %s)", policy.policy, type(e).__name__, e)
        if exporter is not None:
            try:
                vaults[policy.policy] = {"client": policy.client, "vault": vault.backend.location,
                                         "stored": sum(vault.pack_names().values()),
                                         "quota": parse_size(policy.quota, "quota") if policy.quota else None}
            except Exception as e:  # a metric, never a reason to fail the run
                log.warning("policy %s: vault size not measured for the metrics: %s", policy.policy, e)
        rules = policy.retention.model_dump(exclude_none=True)
        if rules and all(s.status != "failed" for s in report.sources):
            apply_retention(policy, rules, vault, catalog)
        return report

    def apply_retention(policy: Policy, rules: dict, vault: Vault, catalog: Catalog) -> None:
        """Retention after a good run; it never fails the run (the snapshots are saved): an append-only vault
        leaves it to the provider's maintenance, any other failure is logged for the support engineer."""
        try:
            rep = prune(vault, None, False, rules, snapshot_names(policy))
        except AppendOnly as e:
            log.info("policy %s retention: not applied here: %s", policy.policy, e)
            return
        except Exception as e:
            log.error("policy %s retention failed (the run's snapshots are saved): %s: %s", policy.policy,
                      type(e).__name__, e)
            return
        if rep.removed:
            catalog.forget_missing(set(vault.snapshot_ids()))
        log.info("policy %s retention: kept %d, removed %d, space reclaim %s", policy.policy, len(rep.kept),
                 len(rep.removed), "done" if rep.gc.ran else f"deferred ({rep.gc.deferred_reason})")

    def last_run(policy: Policy) -> datetime | None:
        """When the policy last ran, from the catalog it records into (its own ``catalog:`` first); an error
        reaches the scheduler, which logs it and skips the catch-up."""
        jobs = catalog_for(policy).jobs(policy=policy.policy, limit=1)
        return datetime.fromisoformat(jobs[0]["started"]) if jobs else None

    def tick(policies: list[Policy]) -> None:
        for p in policies:
            try:
                catalog = catalog_for(p)
                deliver(p, catalog, stale(p, catalog))
            except Exception as e:
                log.error("alert check for policy %s failed: %s", p.policy, e)

    def collect() -> tuple[list[dict], list[dict], list[dict]]:
        """Every catalog the daemon's policies record into: their sources' last jobs and alert states; and each
        vault's size as measured after its policy's last run."""
        with catalogs_lock:
            known = list(catalogs.values()) or [Catalog(to_url(catalog_url) if catalog_url else None)]
        seen_jobs: list[dict] = []
        alerts: list[dict] = []
        for c in known:
            seen_jobs += c.latest_jobs()
            alerts += c.alert_states()
        by_vault = {(v["client"], v["vault"]): v for v in list(vaults.values())}
        return seen_jobs, alerts, list(by_vault.values())

    from orchestrator.scheduler.metrics import MetricsExporter
    from orchestrator.units import parse_size

    vaults: dict[str, dict] = {}  # policy -> its vault's size after its last run
    exporter = MetricsExporter(collect, metrics_listen, metrics_file) if (metrics_listen or metrics_file) else None
    runner = run_one
    if exporter is not None:
        def runner(policy: Policy, trigger: str, only: list[str] | None, abort: AbortSignal):
            try:
                return run_one(policy, trigger, only, abort)
            finally:
                exporter.refresh()

    sched = Scheduler(directory, runner, last_run=last_run, catch_up=catch_up, run_now=run_now, on_tick=tick,
                      max_concurrent=max_concurrent)
    sched.install_signals()
    log.info("daemon started on %s", os.path.abspath(directory))
    try:
        sched.serve()
    finally:
        if exporter is not None:
            exporter.close()


def register(cli: click.Group) -> None:
    cli.add_command(daemon_cmd)
