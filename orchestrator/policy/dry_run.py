"""What ``dobaas run --dry-run`` reports: for each source, what would be captured (the plugin's units and
discovery), from where, into which vault, after the checks a run makes first — secrets readable, the vault
reachable and opened by the passphrase, residency, free space — with nothing written anywhere."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.errors import DobaasError
from orchestrator.plugin import registry
from orchestrator.policy.model import Policy
from orchestrator.policy.preflight import preflight


def dry_run(policy: Policy, passphrase: Callable[[], str]) -> dict:
    problems, found = preflight(policy, discover=True)
    vault_info: dict = {"location": policy.vault}
    try:
        from orchestrator.vault.repository import Vault

        vault = Vault.open(policy.backend(), passphrase())
        vault_info.update(id=vault.config.id, country=vault.config.location, snapshots=len(vault.snapshot_ids()))
        if vault.config.location != "FR" and not policy.residency_consent:
            problems.append(f"the vault is located in {vault.config.location}, outside France, and the policy "
                            "records no residency_consent: a run would refuse to send anything")
        usage = getattr(vault.backend, "usage", None)
        if usage is not None:
            used, total = usage()
            vault_info.update(used_bytes=used, total_bytes=total)
            if total and used >= 0.9 * total:
                problems.append(f"the vault's space is {100 * used / total:.0f}% used")
        vault.backend.close()
    except DobaasError as e:
        problems.append(f"vault {policy.vault}: {e}")
    sources = []
    for cfg in policy.source_configs:
        try:
            units = registry.load(cfg.plugin).units(cfg)
        except DobaasError as e:
            units = []
            problems.append(f"source {cfg.name}: {e}")
        finally:
            registry.end_run({cfg.plugin})
        sources.append({"name": cfg.name, "plugin": cfg.plugin, "items": found.get(cfg.name, []),
                        "snapshots": [f"{policy.client}/{cfg.name}" + (f"/{u}" if u else "") for u in units]})
    return {"policy": policy.policy, "client": policy.client, "vault": vault_info, "sources": sources,
            "problems": problems, "ok": not problems}
