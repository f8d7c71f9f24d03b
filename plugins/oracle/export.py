"""How an Oracle snapshot is exported: the RMAN backup pieces and the control file autobackup as RMAN wrote
them, and the RMAN commands that restore them."""

from __future__ import annotations

from orchestrator.plugin.export import ExportPart, HowToRead, Items, labelled_parts

PIECE = HowToRead(
    fr="Pièces de sauvegarde RMAN (niveau 0, niveaux 1, journaux archivés) et l'autosauvegarde du fichier de "
       "contrôle, telles qu'écrites par RMAN : à restaurer avec les commandes de restore.rman (rman target /).",
    en="RMAN backup pieces (level 0, level 1s, archived logs) and the control file autobackup, as RMAN wrote "
       "them: restored with the commands in restore.rman (rman target /).")
SCRIPT = HowToRead(
    fr="restore.rman : STARTUP NOMOUNT, RESTORE CONTROLFILE, CATALOG, RESTORE et RECOVER dans l'ordre "
       "(remplacer /restore par le dossier des pièces).",
    en="restore.rman: STARTUP NOMOUNT, RESTORE CONTROLFILE, CATALOG, RESTORE and RECOVER in order (replace "
       "/restore with the folder holding the pieces).")


def export_parts(meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
    parts = labelled_parts(items, tree_format, image_format, "RMAN backup piece", PIECE)
    script = (f"# {meta.get('name')} (DBID {meta.get('dbid')}): SCN {meta['scn_range']['from']} to "
              f"{meta['scn_range']['to']}\nSET DBID {meta.get('dbid')};\n"
              "STARTUP NOMOUNT PFILE='/restore/init.ora';\n"
              f"RESTORE CONTROLFILE FROM '/restore/{meta['controlfile']}';\nALTER DATABASE MOUNT;\n"
              "CATALOG START WITH '/restore/pieces/' NOPROMPT;\nRESTORE DATABASE;\n"
              f"RECOVER DATABASE UNTIL SCN {meta['scn_range']['to']};\nALTER DATABASE OPEN RESETLOGS;\n")
    parts.append(ExportPart("restore.rman", "document", format="RMAN script", content=script.encode(), how=SCRIPT))
    return parts
