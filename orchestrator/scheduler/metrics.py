"""Prometheus metrics of the daemon, from the catalog: per source the last run (status, time, duration, bytes,
errors) and the last success; per alert whether it is active. Served as text format on an address of the
daemon's (``--metrics 127.0.0.1:9465``) and/or written atomically to a file for node_exporter's textfile
collector (``--metrics-file``)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

STATUSES = ("ok", "partial", "failed", "interrupted", "running")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


#: the per-source gauges, in the order they are written, with their help text
HELPS = {"dobaas_last_run_timestamp_seconds": "When the source's last run started (Unix time).",
         "dobaas_last_success_timestamp_seconds": "When the source last saved a snapshot (Unix time).",
         "dobaas_last_run_duration_seconds": "How long the source's last run took.",
         "dobaas_last_run_bytes_read": "Bytes the source's last run read.",
         "dobaas_last_run_bytes_stored": "Bytes the source's last run added to the vault.",
         "dobaas_last_run_errors": "Errors (unreadable files, failures) of the source's last run.",
         "dobaas_last_run_status": "1 for the status of the source's last run, 0 for the others."}


def render(jobs_last: list[dict], alerts: list[dict], vaults: list[dict] | None = None) -> str:
    """The text format for these sources' last jobs (newest job of each source), alert states, and vault sizes
    (``client``, ``vault``, ``stored``, ``quota``)."""
    metrics: dict[str, list[str]] = {name: [] for name in HELPS}
    for j in jobs_last:
        labels = f'client="{_label(j["client"])}",source="{_label(j["source"])}",policy="{_label(j["policy"])}"'
        started, ended = _ts(j["started"]), _ts(j.get("ended"))
        metrics["dobaas_last_run_timestamp_seconds"].append(f"{{{labels}}} {started}")
        if j.get("last_success"):
            metrics["dobaas_last_success_timestamp_seconds"].append(f"{{{labels}}} {_ts(j['last_success'])}")
        if ended and j["status"] != "running":
            metrics["dobaas_last_run_duration_seconds"].append(f"{{{labels}}} {max(0.0, ended - (started or ended))}")
        metrics["dobaas_last_run_bytes_read"].append(f"{{{labels}}} {j['bytes_read']}")
        metrics["dobaas_last_run_bytes_stored"].append(f"{{{labels}}} {j['bytes_stored']}")
        metrics["dobaas_last_run_errors"].append(f"{{{labels}}} {len(j['errors'])}")
        for s in STATUSES:
            metrics["dobaas_last_run_status"].append(f'{{{labels},status="{s}"}} {int(j["status"] == s)}')
    out: list[str] = []
    for name, lines in metrics.items():
        out += [f"# HELP {name} {HELPS[name]}", f"# TYPE {name} gauge", *(f"{name}{x}" for x in lines)]
    out += ["# HELP dobaas_alert_active 1 while an alert condition holds (sent when it began where the policy's "
            "alerts ask for it).", "# TYPE dobaas_alert_active gauge",
            *(f'dobaas_alert_active{{key="{_label(a["key"])}"}} {int(a["active"])}' for a in alerts)]
    vaults = vaults or []
    out += ["# HELP dobaas_vault_stored_bytes Bytes the vault stores (every pack), after the last run into it.",
            "# TYPE dobaas_vault_stored_bytes gauge",
            *(f'dobaas_vault_stored_bytes{{client="{_label(v["client"])}",vault="{_label(v["vault"])}"}} '
              f'{v["stored"]}' for v in vaults)]
    quotas = [v for v in vaults if v.get("quota")]
    out += ["# HELP dobaas_quota_bytes The client's subscribed volume (the policy's quota).",
            "# TYPE dobaas_quota_bytes gauge",
            *(f'dobaas_quota_bytes{{client="{_label(v["client"])}"}} {v["quota"]}' for v in quotas),
            "# HELP dobaas_quota_used_ratio Stored bytes over the subscribed volume (alerts at 0.9 and 1).",
            "# TYPE dobaas_quota_used_ratio gauge",
            *(f'dobaas_quota_used_ratio{{client="{_label(v["client"])}"}} {v["stored"] / v["quota"]:.6f}'
              for v in quotas)]
    return "\n".join(out) + "\n"


class MetricsExporter:
    """Renders on demand (HTTP) and on each ``refresh`` (the file); ``collect`` reads the catalog(s)."""

    def __init__(self, collect: Callable[[], tuple[list[dict], list[dict], list[dict]]], listen: str | None,
                 file: str | None) -> None:
        self.collect, self.file = collect, file
        self.server: ThreadingHTTPServer | None = None
        if listen:
            host, _, port = listen.rpartition(":")
            exporter = self

            class Handler(BaseHTTPRequestHandler):
                def log_message(self, fmt: str, *args: Any) -> None:
                    pass

                def do_GET(self) -> None:
                    if self.path.split("?")[0] != "/metrics":
                        self.send_error(404)
                        return
                    try:
                        body = render(*exporter.collect()).encode()
                    except Exception as e:  # the catalog unavailable: say so, do not die
                        self.send_error(503, f"catalog unavailable: {e}")
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
            self.server.daemon_threads = True
            threading.Thread(target=self.server.serve_forever, daemon=True, name="metrics").start()
            log.info("metrics on http://%s/metrics", listen)

    def refresh(self) -> None:
        if not self.file:
            return
        try:
            text = render(*self.collect())
        except Exception as e:
            log.error("metrics file not written: %s", e)
            return
        tmp = f"{self.file}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.file)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
