"""How a SQL Server snapshot is exported: its backup files as SQL Server wrote them (.bak, .trn) and the RESTORE
statements that bring them back in order."""

from __future__ import annotations

from orchestrator.plugin.export import ExportPart, HowToRead, Items, labelled_parts

BACKUP_FILE = HowToRead(
    fr="Fichiers de sauvegarde SQL Server natifs (full.bak, diff.bak, log-NNNN.trn), à restaurer dans l'ordre de "
       "restore.sql (SQL Server Management Studio ou sqlcmd ; RESTORE … WITH MOVE pour changer les fichiers).",
    en="Native SQL Server backup files (full.bak, diff.bak, log-NNNN.trn), restored in the order of restore.sql "
       "(SQL Server Management Studio or sqlcmd; RESTORE … WITH MOVE to place the files elsewhere).")
RESTORE_SQL = HowToRead(
    fr="restore.sql : les instructions RESTORE dans l'ordre (remplacer C:\\export\\ par le dossier des fichiers).",
    en="restore.sql: the RESTORE statements in order (replace C:\\export\\ with the folder holding the files).")


def restore_script(meta: dict) -> str:
    chain = meta.get("chain") or {}
    db = str(meta.get("database", "DATABASE")).replace("]", "]]")
    steps = [chain.get("full"), chain.get("diff"), *(chain.get("logs") or [])]
    lines = [f"-- {meta.get('database')}: {meta.get('backup')} backup, recovery model {meta.get('recovery')}"]
    for i, step in enumerate(s for s in steps if s):
        kind = "LOG" if step["item"].endswith(".trn") else "DATABASE"
        lines.append(f"RESTORE {kind} [{db}] FROM DISK = N'C:\\export\\{step['item']}' WITH NORECOVERY"
                     + (", REPLACE" if i == 0 else "") + ";")
    lines.append(f"RESTORE DATABASE [{db}] WITH RECOVERY;")
    return "\r\n".join(lines) + "\r\n"


def export_parts(meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
    parts = labelled_parts(items, tree_format, image_format, "SQL Server backup", BACKUP_FILE)
    parts.append(ExportPart("restore.sql", "document", format="T-SQL", content=restore_script(meta).encode(),
                            how=RESTORE_SQL))
    return parts
