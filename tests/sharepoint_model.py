"""A model SharePoint farm behind the WS-Man double: the handlers of the sharepoint plugin's shipped scripts.

The farm holds site collections (URL -> documents). Backup-SPFarm writes what SharePoint writes in the backup
folder on the real Samba share: ``spbrtoc.xml`` in its real schema (SPBackupRestoreHistory / SPHistoryObject)
and an ``spbrNNNN`` folder with ``spbackup.xml``, ``spbackup.log`` and numbered ``.bak`` files (a full holds every
document, a differential those changed since the last full of the folder's history, and refuses to run without
one). Backup-SPSite writes one file per site; Restore-SPSite refuses an existing URL; Restore-SPFarm applies the
full then the differential named by BackupId. What it does not model: SQL Server, the real .bak format, the
Central Administration, timer jobs."""

from __future__ import annotations

import json
import os
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tests.wsman import ScriptFailure

TOP = "Farm\\Microsoft SharePoint Foundation Web Application\\SharePoint - 80"


@dataclass
class Farm:
    share_dir: str  # the share's directory here
    share_unc: str  # \\server\share as the farm names it
    sites: dict[str, dict[str, str]] = field(default_factory=dict)  # url -> {document: content}
    admin_running: bool = True
    shell_access: bool = True
    restored: dict[str, dict[str, str]] = field(default_factory=dict)  # what Restore-SPFarm put back (recovery farm)

    def handlers(self) -> dict:
        return {"Backup-DobaasSpFarm.ps1": self.backup_farm, "Backup-DobaasSpSite.ps1": self.backup_site,
                "Restore-DobaasSpSite.ps1": self.restore_site, "Restore-DobaasSpFarm.ps1": self.restore_farm}

    def local(self, unc: str) -> str:
        if not unc.lower().startswith(self.share_unc.lower() + "\\"):
            raise ScriptFailure(f"Cannot find path '{unc}' because it does not exist.")
        return os.path.join(self.share_dir, *unc[len(self.share_unc) + 1 :].split("\\"))

    def _checks(self) -> None:
        if not self.shell_access:
            raise ScriptFailure("the SharePoint cmdlets are not available: not a SharePoint server, or the account "
                                "lacks SharePoint_Shell_Access")
        if not self.admin_running:
            raise ScriptFailure("the SharePoint Administration service (SPAdminV4) is not running: "
                                "Start-Service SPAdminV4")

    # ---- spbrtoc.xml -----------------------------------------------------------------------------------------
    def _toc(self, directory: str) -> ET.Element:
        path = os.path.join(directory, "spbrtoc.xml")
        if os.path.exists(path):
            return ET.parse(path).getroot()
        return ET.Element("SPBackupRestoreHistory")

    def _save_toc(self, directory: str, root: ET.Element) -> None:
        ET.ElementTree(root).write(os.path.join(directory, "spbrtoc.xml"), encoding="utf-8", xml_declaration=True)
        os.chmod(os.path.join(directory, "spbrtoc.xml"), 0o666)

    @staticmethod
    def _entry(root: ET.Element, fields: dict[str, str]) -> None:
        h = ET.SubElement(root, "SPHistoryObject")
        for k, v in fields.items():
            ET.SubElement(h, k).text = v

    # ---- handlers ---------------------------------------------------------------------------------------------
    def backup_farm(self, p: dict) -> dict:
        self._checks()
        directory = self.local(p["Directory"])
        if not os.path.isdir(directory):
            raise ScriptFailure(f"Backup-SPFarm : The directory {p['Directory']} does not exist or is not accessible")
        root = self._toc(directory)
        fulls = [h for h in root.findall("SPHistoryObject")
                 if h.findtext("SPIsBackup") == "True" and h.findtext("SPBackupMethod") == "Full"
                 and os.path.isdir(os.path.join(directory, h.findtext("SPDirectoryName") or ""))]
        method = p["BackupMethod"]
        if method == "Differential" and not fulls:
            raise ScriptFailure("Backup-SPFarm : The differential backup cannot be completed: no full backup was "
                                f"found in {p['Directory']}")
        numbers = [int(n[4:]) for n in os.listdir(directory) if n.startswith("spbr") and n[4:].isdigit()]
        name = f"spbr{max(numbers, default=-1) + 1:04d}"
        folder = os.path.join(directory, name)
        os.makedirs(folder)
        os.chmod(folder, 0o777)
        if method == "Full":
            content = self.sites
        else:
            base = json.loads(open(os.path.join(directory, fulls[-1].findtext("SPDirectoryName") or "",  # noqa: SIM115
                                                "00000001.bak")).read())
            content = {u: {d: c for d, c in docs.items() if base.get(u, {}).get(d) != c}
                       for u, docs in self.sites.items()}
        files = {"00000001.bak": json.dumps(content, sort_keys=True),
                 "spbackup.xml": f"<SPBackupRestoreObjects><SPBackupObject><SPName>{TOP}</SPName>"
                                 f"<SPBackupMethod>{method}</SPBackupMethod></SPBackupObject></SPBackupRestoreObjects>",
                 "spbackup.log": f"[{datetime.now(UTC):%m/%d/%Y %H:%M:%S}] Backup Method: {method}\n"
                                 "Completed with 0 warnings.\nCompleted with 0 errors.\n"}
        for fname, text in files.items():
            with open(os.path.join(folder, fname), "w") as f:
                f.write(text)
            os.chmod(os.path.join(folder, fname), 0o666)
        sp_id = str(uuid.uuid4())
        now = f"{datetime.now(UTC):%m/%d/%Y %H:%M:%S}"
        self._entry(root, {"SPId": sp_id, "SPRequestedBy": "ACME\\backup", "SPBackupMethod": method,
                           "SPRestoreMethod": "None", "SPStartTime": now, "SPFinishTime": now, "SPIsBackup": "True",
                           "SPBackupDirectory": f"{p['Directory']}\\{name}\\", "SPDirectoryName": name,
                           "SPDirectoryNumber": str(int(name[4:])), "SPTopComponent": p.get("Item") or TOP,
                           "SPTopComponentId": str(uuid.uuid5(uuid.NAMESPACE_URL, TOP)), "SPWarningCount": "0",
                           "SPErrorCount": "0"})
        self._save_toc(directory, root)
        return {"Id": sp_id, "Method": method, "Directory": f"{p['Directory']}\\{name}\\", "Top": p.get("Item") or TOP,
                "Warnings": 0}

    def backup_site(self, p: dict) -> dict:
        self._checks()
        if p["Identity"] not in self.sites:
            raise ScriptFailure(f"no site collection at {p['Identity']}")
        path = self.local(p["Path"])
        with open(path, "w") as f:
            json.dump({"url": p["Identity"], "docs": self.sites[p["Identity"]]}, f, sort_keys=True)
        os.chmod(path, 0o666)
        return {"Url": p["Identity"], "Path": p["Path"], "Size": os.path.getsize(path)}

    def restore_site(self, p: dict) -> dict:
        self._checks()
        if p["Identity"] in self.sites:
            raise ScriptFailure(f"a site collection already exists at {p['Identity']}, choose another URL")
        with open(self.local(p["Path"])) as f:
            self.sites[p["Identity"]] = json.load(f)["docs"]
        return {"Url": p["Identity"], "ContentDatabase": "WSS_Content"}

    def restore_farm(self, p: dict) -> dict:
        self._checks()
        directory = self.local(p["Directory"])
        root = self._toc(directory)
        entries = [h for h in root.findall("SPHistoryObject") if h.findtext("SPIsBackup") == "True"]
        target = next((h for h in entries if h.findtext("SPId") == p["BackupId"]), None)
        if target is None:
            raise ScriptFailure(f"Restore-SPFarm : The backup {p['BackupId']} was not found in {p['Directory']}")

        def load(h: ET.Element) -> dict:
            path = os.path.join(directory, h.findtext("SPDirectoryName") or "", "00000001.bak")
            if not os.path.exists(path):
                raise ScriptFailure(f"Restore-SPFarm : Cannot find the backup files of {h.findtext('SPId')} in "
                                    f"{p['Directory']}")
            with open(path) as f:
                return json.load(f)

        if target.findtext("SPBackupMethod") == "Full":
            content = load(target)
        else:
            before = entries[: entries.index(target)]
            full = [h for h in before if h.findtext("SPBackupMethod") == "Full"]
            if not full:
                raise ScriptFailure("Restore-SPFarm : The full backup this differential depends on is not in "
                                    f"{p['Directory']}")
            content = load(full[-1])
            for url, docs in load(target).items():
                content.setdefault(url, {}).update(docs)
        self.restored = content
        self._entry(root, {"SPId": str(uuid.uuid4()), "SPIsBackup": "False", "SPRestoreMethod": "Overwrite",
                           "SPTopComponent": p["Item"], "SPWarningCount": "0", "SPErrorCount": "0"})
        self._save_toc(directory, root)
        return {"Id": p["BackupId"], "Top": p["Item"], "Warnings": 0}
