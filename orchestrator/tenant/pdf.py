"""The readable copy of a destruction certificate (PDF, French and English). The signed JSON beside it is what
`dobaas certificate verify` checks; the PDF carries its signature and key id so the two can be matched."""

from __future__ import annotations

import importlib.util
import os

from orchestrator.units import human_bytes


def _font() -> str | None:
    """DejaVu Sans from matplotlib's data (a dependency already): any client name prints, not only Latin-1."""
    spec = importlib.util.find_spec("matplotlib")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(base, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.exists(path):
            return path
    return None


def write_pdf(doc: dict, path: str) -> None:
    from fpdf import FPDF

    c, sig = doc["certificate"], doc["signature"]
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    font = _font()
    if font:
        pdf.add_font("DejaVu", fname=font)
        pdf.set_font("DejaVu", size=10)
    else:
        pdf.set_font("Helvetica", size=10)

    def line(text: str, size: int = 10, gap: float = 1.5) -> None:
        pdf.set_font_size(size)
        pdf.multi_cell(0, size * 0.5, text if font else text.encode("latin-1", "replace").decode("latin-1"))
        pdf.ln(gap)

    line("Certificat de destruction des données / Data destruction certificate", 15, 4)
    line(f"Client : {c['client']}")
    line(f"Référence / Reference : {c['id']}")
    line(f"Début / Started : {c['started']}    Fin / Finished : {c['finished']}")
    line(f"Opérateur / Operator : {c['operator']}    Machine / Host : {c['host']}    Outil / Tool : {c['tool']}")
    line("Complète / Complete : " + ("oui / yes" if c["complete"] else
                                     "non : suppressions programmées ci-dessous / no: deletions scheduled below"),
         gap=4)
    for v in c["vaults"]:
        line(f"Coffre / Vault {v['location']} ({v['mode']})", 11)
        line(f"  sauvegardes / snapshots : {v['snapshots_deleted']} · objets / objects : {v['objects_deleted']} · "
             f"{human_bytes(v['bytes_deleted'])} ({v['bytes_deleted']} octets/bytes) · clés détruites / keys "
             f"destroyed : {'oui / yes' if v['keys_destroyed'] else 'non / no'} · restant / remaining : "
             f"{v['remaining_objects']}")
        for s in v["scheduled"]:
            line(f"  programmé / scheduled : {s['objects']} objet(s), {human_bytes(s['bytes'])} après / after "
                 f"{s['retained_until'] or '?'} (Object Lock)")
    cat = c["catalog"]
    line("Catalogue / Catalog : " + ", ".join(f"{k} {n}" for k, n in sorted(cat.items())), gap=4)
    line(f"Signature {sig['algorithm']}, clé / key {sig['key_id']} :", 9)
    line(sig["value"], 8)
    line("Vérification / Verification : dobaas certificate verify CERTIFICAT.json --public-key CLE.pub", 9)
    pdf.output(path)
