"""How a Hyper-V snapshot is exported: its disks as dynamic VHDX and the VM's settings as captured."""

from __future__ import annotations

import json

from orchestrator.plugin.export import ExportPart, HowToRead, Items, default_parts

VM_JSON = HowToRead(
    fr="vm.json : les réglages de la VM relevés par Get-VM (processeurs, mémoire, génération, cartes réseau, "
       "disques). Pour la recréer : New-VM -Name NOM -Generation G -MemoryStartupBytes M -VHDPath disque.vhdx, "
       "puis Set-VMProcessor / Add-VMHardDiskDrive pour les autres disques.",
    en="vm.json: the VM's settings as Get-VM reported them (processors, memory, generation, network adapters, "
       "disks). To recreate it: New-VM -Name NAME -Generation G -MemoryStartupBytes M -VHDPath disk.vhdx, then "
       "Set-VMProcessor / Add-VMHardDiskDrive for the other disks.")


def export_parts(meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
    parts = default_parts(items, tree_format, image_format)
    doc = {"vm": meta.get("vm"), "disks": meta.get("disks"), "host": meta.get("host")}
    parts.append(ExportPart("vm.json", "document", format="Hyper-V VM settings (JSON)",
                            content=json.dumps(doc, indent=2, ensure_ascii=False).encode(), how=VM_JSON))
    return parts
