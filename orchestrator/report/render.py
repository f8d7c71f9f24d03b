"""The monthly report as a PDF (two A4 pages: the summary, then the charts) or a self-contained HTML page, in
French by default (English with ``lang="en"``). Charts are drawn with matplotlib (no display needed)."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from typing import Any

from orchestrator.policy.budget import DAILY_CHANGE_BUDGET as BUDGET
from orchestrator.report.monthly import MonthlyReport
from orchestrator.units import BINARY_UNITS, FRENCH_UNITS, human_bytes

TEXT = {
    "fr": {"title": "Rapport mensuel de sauvegarde", "client": "Client", "month": "Mois",
           "protected": "Données protégées", "source": "Source", "runs": "Exécutions", "ok": "Réussies",
           "failed": "Échouées", "snapshots": "Sauvegardes",
           "volume": "Volume", "change": "Changement max/jour", "over": "Jours hors budget",
           "success": "Taux de réussite",
           "subscribed": "Volume souscrit", "saved": "Volume sauvegardé", "restores": "Restaurations",
           "incidents": "Incidents", "none": "aucun", "budget": "budget contractuel 0,2 %/jour",
           "chart_runs": "Exécutions par jour", "chart_change": "Taux de changement quotidien",
           "chart_volume": "Volume sauvegardé par source", "reprice": "Au-delà du budget de 0,2 % de changement par "
           "jour, la sauvegarde quotidienne n'est plus garantie et le contrat doit être réévalué (art. 6.05).",
           "generated": "Généré le", "day": "jour", "what": "Quoi", "target": "Destination", "status": "Statut",
           "error": "Erreur", "time": "Date", "units": ",".join(FRENCH_UNITS), "colon": " : ", "pct": " %"},
    "en": {"title": "Monthly backup report", "client": "Client", "month": "Month", "protected": "Protected data",
           "source": "Source", "runs": "Runs", "ok": "Succeeded", "failed": "Failed", "snapshots": "Snapshots",
           "volume": "Volume", "change": "Max change/day", "over": "Days over budget", "success": "Success rate",
           "subscribed": "Subscribed volume", "saved": "Saved volume", "restores": "Restores",
           "incidents": "Incidents", "none": "none", "budget": "contract budget 0.2%/day",
           "chart_runs": "Runs per day", "chart_change": "Daily change rate",
           "chart_volume": "Saved volume per source", "reprice": "Beyond the budget of 0.2% change a day, the daily "
           "backup is no longer guaranteed and the contract is to be re-evaluated (art. 6.05).",
           "generated": "Generated on", "day": "day", "what": "What", "target": "Target", "status": "Status",
           "error": "Error", "time": "Date", "units": ",".join(BINARY_UNITS), "colon": ": ", "pct": "%"},
}


def _size(n: float, t: dict) -> str:
    return human_bytes(n, tuple(t["units"].split(",")))


def _pct(x: float | None, t: dict) -> str:
    return "-" if x is None else f"{100 * x:.2f}{t['pct']}"


def _when(iso: str) -> str:
    """A catalog time (UTC) as the reader's local time, to the minute."""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


def _charts(rep: MonthlyReport, t: dict) -> list[bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = []
    days = [d["day"][-2:] for d in rep.days]
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.bar(days, [d["ok"] for d in rep.days], color="#2e7d32", label=t["ok"])
    ax.bar(days, [d["failed"] for d in rep.days], bottom=[d["ok"] for d in rep.days], color="#c62828",
           label=t["failed"])
    ax.set_title(t["chart_runs"])
    ax.set_xlabel(t["day"])
    ax.legend(loc="upper right", fontsize=8)
    pngs.append(_png(fig))
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.plot(days, [100 * d["change"] for d in rep.days], marker="o", color="#1565c0")
    ax.axhline(100 * BUDGET, color="#c62828", linestyle="--", label=t["budget"])
    ax.set_title(t["chart_change"])
    ax.set_ylabel("%")
    ax.legend(loc="upper right", fontsize=8)
    pngs.append(_png(fig))
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    names = [s["source"] for s in rep.sources] or ["-"]
    ax.barh(names, [s["volume"] / 2**30 for s in rep.sources] or [0], color="#6a1b9a")
    if rep.quota:
        ax.axvline(rep.quota / 2**30, color="#c62828", linestyle="--", label=t["subscribed"])
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(t["chart_volume"])
    ax.set_xlabel(t["units"].split(",")[3])
    pngs.append(_png(fig))
    return pngs


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def summary_lines(rep: MonthlyReport, t: dict) -> list[str]:
    c = t["colon"]
    out = [f"{t['client']}{c}{rep.client}    {t['month']}{c}{rep.month}",
           f"{t['success']}{c}{_pct(rep.success_rate, t)} ({rep.runs} {t['runs'].lower()})",
           f"{t['saved']}{c}{_size(rep.volume, t)}" + (
               f" / {t['subscribed']}{c}{_size(rep.quota, t)} ({100 * rep.volume / rep.quota:.0f}{t['pct']})"
               if rep.quota else ""),
           f"{t['restores']}{c}{len(rep.restores)}    {t['incidents']}{c}{len(rep.incidents)}"]
    return out


def to_html(rep: MonthlyReport, lang: str = "fr") -> str:
    t = TEXT[lang]
    e = html.escape
    charts = "".join(f'<img alt="" src="data:image/png;base64,{base64.b64encode(p).decode()}">'
                     for p in _charts(rep, t))
    rows = "".join(f"<tr><td>{e(s['source'])}</td><td>{s['runs']}</td><td>{s['ok']}</td><td>{s['failed']}</td>"
                   f"<td>{s['snapshots']}</td><td>{_size(s['volume'], t)}</td><td>{_pct(s['change_rate'], t)}</td>"
                   f"<td>{s['days_over_budget']}</td></tr>" for s in rep.sources)
    restores = "".join(f"<tr><td>{e(_when(r['time']))}</td><td>{e(r['what'])}</td><td>{e(r['target'])}</td>"
                       f"<td>{e(r['status'])}</td></tr>" for r in rep.restores) or f"<tr><td>{t['none']}</td></tr>"
    incidents = "".join(f"<tr><td>{e(_when(i['time']))}</td><td>{e(i['source'])}</td><td>{e(i['status'])}</td>"
                        f"<td>{e(i['error'])}</td></tr>" for i in rep.incidents) or f"<tr><td>{t['none']}</td></tr>"
    summary = "".join(f"<p>{e(x)}</p>" for x in summary_lines(rep, t))
    return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{t["title"]} {e(rep.month)}'
            "</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:.2em .5em}img{display:block;margin:1em 0}</style></head><body>"
            f"<h1>{t['title']}</h1>{summary}<h2>{t['protected']}</h2><table><tr><th>{t['source']}</th>"
            f"<th>{t['runs']}</th><th>{t['ok']}</th><th>{t['failed']}</th><th>{t['snapshots']}</th>"
            f"<th>{t['volume']}</th><th>{t['change']}</th><th>{t['over']}</th></tr>{rows}</table>"
            f"<p>{t['reprice']}</p>{charts}<h2>{t['restores']}</h2><table>{restores}</table>"
            f"<h2>{t['incidents']}</h2><table>{incidents}</table>"
            f"<p><small>{t['generated']} {datetime.now().astimezone():%Y-%m-%d %H:%M %z}</small></p></body></html>")


def to_pdf(rep: MonthlyReport, path: str, lang: str = "fr") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    t = TEXT[lang]
    with PdfPages(path) as pdf:
        fig = plt.figure(figsize=(8.27, 11.69))
        y = 0.95
        fig.text(0.08, y, t["title"], fontsize=18, weight="bold")
        for line in summary_lines(rep, t):
            y -= 0.035
            fig.text(0.08, y, line, fontsize=11)
        y -= 0.05
        fig.text(0.08, y, t["protected"], fontsize=13, weight="bold")
        header = (f"{t['source'][:24]:24} {t['runs']:>6} {t['ok']:>8} {t['failed']:>8} {t['volume']:>10} "
                  f"{t['change']:>10}")
        y -= 0.03
        fig.text(0.08, y, header, fontsize=8, family="monospace")
        for s in rep.sources:
            y -= 0.022
            fig.text(0.08, y, f"{s['source'][:24]:24} {s['runs']:>6} {s['ok']:>8} {s['failed']:>8} "
                              f"{_size(s['volume'], t):>10} {_pct(s['change_rate'], t):>10}",
                     fontsize=8, family="monospace")
        y -= 0.04
        fig.text(0.08, y, t["reprice"], fontsize=8, wrap=True)
        for title, items in ((t["restores"], [f"{_when(r['time'])}  {r['what']} -> {r['target']} ({r['status']})"
                                              for r in rep.restores]),
                             (t["incidents"], [f"{_when(i['time'])}  {i['source']}: {i['status']} {i['error'][:70]}"
                                               for i in rep.incidents])):
            y -= 0.05
            fig.text(0.08, y, title, fontsize=13, weight="bold")
            for line in items[:12] or [t["none"]]:
                y -= 0.022
                fig.text(0.08, y, line, fontsize=8)
        fig.text(0.08, 0.03, f"{t['generated']} {datetime.now().astimezone():%Y-%m-%d %H:%M %z}", fontsize=7)
        pdf.savefig(fig)
        plt.close(fig)
        fig = plt.figure(figsize=(8.27, 11.69))
        for i, png in enumerate(_charts(rep, t)):
            ax = fig.add_axes((0.05, 0.68 - i * 0.32, 0.9, 0.28))
            ax.imshow(mpimg.imread(io.BytesIO(png)))
            ax.axis("off")
        pdf.savefig(fig)
        plt.close(fig)
