"""How a KVM snapshot is exported: its disks as qcow2 (or the format asked for) and the domain's own libvirt XML."""

from __future__ import annotations

from orchestrator.plugin.export import ExportPart, HowToRead, Items, default_parts

DOMAIN_XML = HowToRead(
    fr="domain.xml : la configuration libvirt de la VM telle que sauvegardée. Pour la recréer : placer les disques "
       "exportés, faire pointer chaque <disk><source file=…> vers eux (et <driver type=…> vers leur format), puis "
       "virsh define domain.xml (changer <name> et retirer <uuid> pour une copie à côté de l'original).",
    en="domain.xml: the VM's libvirt configuration as backed up. To recreate it: put the exported disks in place, "
       "point each <disk><source file=…> at them (and <driver type=…> at their format), then virsh define "
       "domain.xml (change <name> and remove <uuid> for a copy beside the original).")


def export_parts(meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
    parts = default_parts(items, tree_format, image_format)
    if meta.get("domain_xml"):
        parts.append(ExportPart("domain.xml", "document", format="libvirt domain XML",
                                content=meta["domain_xml"].encode(), how=DOMAIN_XML))
    return parts
