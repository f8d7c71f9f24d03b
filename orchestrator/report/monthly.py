"""The monthly client report's figures, from the catalog: what was protected, the success rate of the runs,
the restores, the saved volume against the subscribed one, the change rate against the contract's 0.2% daily
budget (its re-pricing trigger [6.05]), and the incidents."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.catalog.db import Catalog
from orchestrator.errors import UsageError
from orchestrator.policy.budget import DAILY_CHANGE_BUDGET as BUDGET


@dataclass
class MonthlyReport:
    client: str
    month: str  # YYYY-MM
    sources: list[dict] = field(default_factory=list)  # name, runs, ok, failed, snapshots, volume, change_rate...
    days: list[dict] = field(default_factory=list)  # day, ok, failed, change
    restores: list[dict] = field(default_factory=list)
    incidents: list[dict] = field(default_factory=list)
    volume: int = 0
    quota: int | None = None

    @property
    def runs(self) -> int:
        return sum(s["runs"] for s in self.sources)

    @property
    def success_rate(self) -> float | None:
        return sum(s["ok"] for s in self.sources) / self.runs if self.runs else None


def _local_day(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d")


def _in_month(iso: str, month: str) -> bool:
    return _local_day(iso)[:7] == month


def _succeeded(job: dict) -> bool:
    return job["status"] in ("ok", "partial")


def build(catalog: Catalog, client: str, month: str, quota: int | None = None) -> MonthlyReport:
    try:
        datetime.strptime(month, "%Y-%m")
    except ValueError:
        raise UsageError(f"--month {month!r}: expected YYYY-MM") from None
    rep = MonthlyReport(client, month, quota=quota)
    jobs = [j for j in catalog.jobs(limit=1_000_000) if j["client"] == client and j["status"] != "running"
            and _in_month(j["started"], month)]
    snaps = catalog.snapshots(client=client)
    by_source: dict[str, list[dict]] = defaultdict(list)
    for j in jobs:
        by_source[j["source"]].append(j)
    day_figures: dict[str, dict] = defaultdict(lambda: {"ok": 0, "failed": 0, "change": 0.0})
    for source, runs in sorted(by_source.items()):
        top = source.split("/")[0]
        own = [s for s in snaps if s["source"] == source or s["source"] == top]
        base = sum(i.get("size") or 0 for i in own[0]["items"]) if own else 0
        latest = sum(i.get("size") or 0 for i in own[-1]["items"]) if own else 0
        ok = [j for j in runs if _succeeded(j)]
        daily: dict[str, int] = defaultdict(int)
        for j in ok:
            daily[_local_day(j["started"])] += j["bytes_stored"]
        first_day = min(daily) if daily else None
        # the seeding (the first day, when this month's runs made the source's first snapshot) is not change
        steady = {d: (b / base if base else 0.0) for d, b in daily.items() if d != first_day or len(own) > len(ok)}
        rep.sources.append({"source": source, "runs": len(runs), "ok": len(ok), "failed": len(runs) - len(ok),
                            "snapshots": sum(1 for s in own if _in_month(s["time"], month)), "volume": latest,
                            "change_rate": max(steady.values()) if steady else 0.0,
                            "days_over_budget": sum(1 for r in steady.values() if r > BUDGET)})
        rep.volume += latest
        for j in runs:
            day_figures[_local_day(j["started"])]["ok" if _succeeded(j) else "failed"] += 1
            if not _succeeded(j):
                rep.incidents.append({"time": j["started"], "source": source, "status": j["status"],
                                      "error": (j["errors"] or [""])[0]})
        for d, r in steady.items():
            day_figures[d]["change"] = max(day_figures[d]["change"], r)
    rep.days = [{"day": d, **f} for d, f in sorted(day_figures.items())]
    ids = {s["id"] for s in snaps}
    rep.restores = [{"time": r["time"], "snapshot": r["snapshot_id"], "target": r["target"], "status": r["status"],
                     "what": ", ".join(json.loads(r["paths"]))} for r in catalog.restores()
                    if r["snapshot_id"] in ids and _in_month(r["time"], month)]
    return rep
