"""What `dobaas run` would fail on before it reads a byte, checked by `dobaas policy check`: the vault
passphrase and every source's secrets can be read, and (with ``discover``) each plugin finds what the source
names (paths that exist, VMs, databases)."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.errors import DobaasError
from orchestrator.plugin import registry
from orchestrator.policy.model import Policy


def preflight(policy: Policy, discover: bool) -> tuple[list[str], dict[str, list[str]]]:
    """(problems, items found per source). A policy without a passphrase field relies on DOBAAS_PASSPHRASE at
    run time, which is the caller's environment, not the file's: not a problem of the policy."""
    problems: list[str] = []
    found: dict[str, list[str]] = {}
    checks: list[tuple[str, Callable[[], object]]] = [("passphrase", policy.passphrase)]
    checks += [("remote", read) for read in policy.access_secrets()]
    if policy.copy_to is not None:
        checks.append(("copy_to", policy.copy_to.passphrase))
        checks += [("copy_to", read) for read in policy.copy_to.access_secrets()]
    for cfg in policy.source_configs:
        password = getattr(cfg, "password", None)
        if callable(password):
            checks.append((f"source {cfg.name}", password))
    for _what, read in checks:
        try:
            read()
        except DobaasError as e:
            problems.append(str(e))
    if discover:
        try:
            for cfg in policy.source_configs:
                try:
                    found[cfg.name] = registry.load(cfg.plugin).discover(cfg)
                except DobaasError as e:
                    problems.append(f"source {cfg.name}: {e}")
                except Exception as e:  # a plugin's unexpected failure is still this source's problem, reported
                    problems.append(f"source {cfg.name}: {type(e).__name__}: {e}")
        finally:
            registry.end_run({cfg.plugin for cfg in policy.source_configs})
    return problems, found
