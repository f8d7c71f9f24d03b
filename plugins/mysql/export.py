"""How a MySQL/MariaDB snapshot is exported: the SQL dumps, users and archived logs as stored (logical), or the
mariabackup streams (physical), each with how to load it."""

from __future__ import annotations

from orchestrator.plugin.export import ExportPart, HowToRead, Items, default_parts

SQL_DUMP = HowToRead(
    fr="Dump SQL d'une base (texte, jeu de caractères d'origine) : mysql -u root -p NOM_BASE < dump/NOM_BASE.sql "
       "(créer la base d'abord : mysql -e 'CREATE DATABASE NOM_BASE'). users.sql recrée les comptes et droits.",
    en="SQL dump of one database (text, original character set): mysql -u root -p DBNAME < dump/DBNAME.sql "
       "(create the database first: mysql -e 'CREATE DATABASE DBNAME'). users.sql recreates accounts and grants.")
BINLOG = HowToRead(
    fr="Journaux binaires (binlog) depuis la sauvegarde précédente, à rejouer après les dumps de previous/ : "
       "mariadb-binlog binlog/FICHIER... | mysql -u root -p (ou mysqlbinlog ; --stop-datetime pour un instant).",
    en="Binary logs since the previous backup, replayed after the dumps under previous/: mariadb-binlog "
       "binlog/FILE... | mysql -u root -p (or mysqlbinlog; --stop-datetime for a point in time).")
XBSTREAM = HowToRead(
    fr="Sauvegarde physique mariabackup (xbstream), complète puis incrémentales dans l'ordre des numéros : "
       "mbstream -x -C DOSSIER < physical/00-full.xbstream ; mariabackup --prepare --target-dir=DOSSIER "
       "(incrémentales : --incremental-dir) ; puis mariabackup --copy-back.",
    en="mariabackup physical backup (xbstream), full then incrementals in number order: mbstream -x -C DIR < "
       "physical/00-full.xbstream; mariabackup --prepare --target-dir=DIR (incrementals: --incremental-dir); "
       "then mariabackup --copy-back.")


def export_parts(meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
    parts = default_parts(items, tree_format, image_format)
    for p in parts:
        name = p.item or ""
        if name.endswith(".sql"):
            p.format, p.how = "SQL dump", SQL_DUMP
        elif name.startswith("binlog/"):
            p.format, p.how = "MySQL binary log", BINLOG
        elif name.endswith(".xbstream"):
            p.format, p.how = "mariabackup xbstream", XBSTREAM
    return parts
