"""How a VMware snapshot is exported: its disks as stream-optimized VMDK and an OVF descriptor that vSphere
("Deploy OVF Template", ovftool) and VirtualBox import, plus the vSphere configuration as captured."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from orchestrator.plugin.export import ExportPart, HowToRead, Items, default_parts

OVF = HowToRead(
    fr="vm.ovf : descripteur OVF (DMTF) de la VM avec ses disques VMDK. Import : client vSphere « Déployer un "
       "modèle OVF » (sélectionner vm.ovf et les .vmdk), ovftool vm.ovf vi://…, ou VirtualBox « Importer ». "
       "vm-config.xml : la configuration vSphere complète telle que sauvegardée.",
    en="vm.ovf: the VM's OVF (DMTF) descriptor with its VMDK disks. Import: vSphere Client \"Deploy OVF "
       "Template\" (select vm.ovf and the .vmdk files), ovftool vm.ovf vi://…, or VirtualBox \"Import\". "
       "vm-config.xml: the full vSphere configuration as backed up.")
_CONTROLLERS = {"VirtualLsiLogicController": "lsilogic", "VirtualLsiLogicSASController": "lsilogicsas",
                "ParaVirtualSCSIController": "VirtualSCSI", "VirtualBusLogicController": "buslogic"}


def ovf(config: dict, disk_files: dict[str, tuple[str, int]]) -> str:
    """An OVF 1.1 envelope for ``config`` (the plugin's summary of the VM) whose disks are ``disk_files``
    ({disk name: (file name, capacity)})."""
    disks = [d for d in config.get("disks", []) if d["name"] in disk_files]
    refs = "".join(f'<File ovf:href={quoteattr(disk_files[d["name"]][0])} ovf:id="file{i}"/>'
                   for i, d in enumerate(disks))
    dsec = "".join(
        f'<Disk ovf:capacity="{disk_files[d["name"]][1]}" ovf:capacityAllocationUnits="byte" '
        f'ovf:diskId="disk{i}" ovf:fileRef="file{i}" '
        'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>'
        for i, d in enumerate(disks))
    nets = sorted({n.get("network") or "VM Network" for n in config.get("nics", [])})
    nsec = "".join(f"<Network ovf:name={quoteattr(n)}><Description>{n}</Description></Network>" for n in nets)
    items, iid = [], 1

    def item(body: str) -> None:
        nonlocal iid
        items.append(f"<Item><rasd:InstanceID>{iid}</rasd:InstanceID>{body}</Item>")
        iid += 1

    item(f"<rasd:ElementName>{config.get('num_cpu', 1)} virtual CPU(s)</rasd:ElementName>"
         f"<rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>{config.get('num_cpu', 1)}"
         "</rasd:VirtualQuantity>")
    item("<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>memory</rasd:ElementName>"
         f"<rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>{config.get('memory_mb', 1024)}"
         "</rasd:VirtualQuantity>")
    ctrl_ids: dict[int, int] = {}
    for c in config.get("controllers", []):
        kind = "6" if "SCSI" in c["type"] or "Lsi" in c["type"] or "BusLogic" in c["type"] else (
            "20" if "Sata" in c["type"] or "AHCI" in c["type"] else "5")
        ctrl_ids[c["key"]] = iid
        sub = _CONTROLLERS.get(c["type"].rsplit(".", 1)[-1], "")
        item(f"<rasd:Address>{c.get('bus_number', 0)}</rasd:Address><rasd:ElementName>{c['type']}"
             f"</rasd:ElementName>" + (f"<rasd:ResourceSubType>{sub}</rasd:ResourceSubType>" if sub else "")
             + f"<rasd:ResourceType>{kind}</rasd:ResourceType>")
    for i, d in enumerate(disks):
        parent = ctrl_ids.get(d["controller_key"])
        item(f"<rasd:AddressOnParent>{d.get('unit_number', 0)}</rasd:AddressOnParent><rasd:ElementName>{d['name']}"
             f"</rasd:ElementName><rasd:HostResource>ovf:/disk/disk{i}</rasd:HostResource>"
             + (f"<rasd:Parent>{parent}</rasd:Parent>" if parent else "") + "<rasd:ResourceType>17</rasd:ResourceType>")
    for n in config.get("nics", []):
        item("<rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>"
             f"<rasd:Connection>{n.get('network') or 'VM Network'}</rasd:Connection>"
             f"<rasd:ElementName>{n['type']}</rasd:ElementName>"
             f"<rasd:ResourceSubType>{n['type'].rsplit('.', 1)[-1].replace('Virtual', '')}</rasd:ResourceSubType>"
             "<rasd:ResourceType>10</rasd:ResourceType>")
    name = config.get("name") or "vm"
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" '
            'xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" '
            'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" '
            'xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" '
            'xmlns:vmw="http://www.vmware.com/schema/ovf">\n'
            f"<References>{refs}</References>\n"
            f"<DiskSection><Info>Virtual disks</Info>{dsec}</DiskSection>\n"
            f"<NetworkSection><Info>Networks</Info>{nsec}</NetworkSection>\n"
            f"<VirtualSystem ovf:id={quoteattr(name)}><Info>A virtual machine</Info><Name>{name}</Name>"
            f"<OperatingSystemSection ovf:id=\"1\" vmw:osType={quoteattr(config.get('guest_id') or 'otherGuest')}>"
            "<Info>Guest operating system</Info></OperatingSystemSection>"
            "<VirtualHardwareSection><Info>Virtual hardware</Info><System>"
            "<vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID>"
            f"<vssd:VirtualSystemType>{config.get('version') or 'vmx-13'}</vssd:VirtualSystemType></System>"
            + "".join(items) + "</VirtualHardwareSection></VirtualSystem>\n</Envelope>\n")


def export_parts(meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
    parts = default_parts(items, tree_format, image_format)
    config = meta.get("vm_config") or {}
    sizes = {i["name"]: i.get("size", 0) for i in items if i["type"] == "image"}
    files = {p.item: (p.path, sizes.get(p.item or "", 0)) for p in parts if p.kind == "image" and p.item}
    if config and image_format == "vmdk":
        parts.append(ExportPart("vm.ovf", "document", format="OVF", content=ovf(config, files).encode(), how=OVF))
    if meta.get("vm_config_xml"):
        parts.append(ExportPart("vm-config.xml", "document", format="OVF", content=meta["vm_config_xml"].encode(),
                                how=OVF))
    return parts
