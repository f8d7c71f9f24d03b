"""LISEZMOI.txt and README.txt of an export: what the folder holds and how to read each format with common
tools, in French and in English (the contract's "readable without difficulty in an equivalent environment")."""

from __future__ import annotations

from orchestrator.plugin.export import HowToRead

CORE_FORMATS: dict[str, HowToRead] = {
    "tar": HowToRead(
        fr="Archive tar POSIX (pax) d'une arborescence de fichiers, avec propriétaires, droits, dates, attributs "
           "étendus, ACL, liens physiques et fichiers creux. Extraire en root pour garder les propriétaires :\n"
           "  tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf FICHIER.tar -C DOSSIER\n"
           "ou avec bsdtar (libarchive) : bsdtar -xpf FICHIER.tar -C DOSSIER. Sous Windows : 7-Zip l'ouvre.",
        en="POSIX (pax) tar archive of a file tree, with owners, modes, times, extended attributes, ACLs, hard links "
           "and sparse files. Extract as root to keep the owners:\n"
           "  tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf FILE.tar -C DIR\n"
           "or with bsdtar (libarchive): bsdtar -xpf FILE.tar -C DIR. On Windows, 7-Zip opens it."),
    "dir": HowToRead(
        fr="Dossier ordinaire : les fichiers tels qu'ils étaient, lisibles directement.",
        en="A plain directory: the files as they were, readable as they are."),
    "raw": HowToRead(
        fr="Image disque brute (octet pour octet, fichier creux). Montage en lecture seule sous Linux :\n"
           "  losetup --read-only --find --show --partscan IMAGE.raw ; mount -o ro /dev/loopNpX /mnt\n"
           "Conversion : qemu-img convert -f raw -O qcow2 IMAGE.raw IMAGE.qcow2",
        en="Raw disk image (byte for byte, sparse file). Mount read-only on Linux:\n"
           "  losetup --read-only --find --show --partscan IMAGE.raw ; mount -o ro /dev/loopNpX /mnt\n"
           "Convert: qemu-img convert -f raw -O qcow2 IMAGE.raw IMAGE.qcow2"),
    "qcow2": HowToRead(
        fr="Image disque QCOW2 (KVM/QEMU, Proxmox, OpenStack) : à attacher à une VM (virt-manager, virsh), ou "
           "vérifier avec qemu-img info ; conversion en brut : qemu-img convert -O raw IMAGE.qcow2 IMAGE.raw",
        en="QCOW2 disk image (KVM/QEMU, Proxmox, OpenStack): attach it to a VM (virt-manager, virsh), or check it "
           "with qemu-img info; to raw: qemu-img convert -O raw IMAGE.qcow2 IMAGE.raw"),
    "vhdx": HowToRead(
        fr="Disque virtuel VHDX dynamique (Hyper-V, Windows) : Windows le monte d'un double clic (Mount-VHD), "
           "Hyper-V l'attache à une VM ; sous Linux : qemu-img convert -O raw IMAGE.vhdx IMAGE.raw",
        en="Dynamic VHDX virtual disk (Hyper-V, Windows): Windows mounts it with a double click (Mount-VHD), "
           "Hyper-V attaches it to a VM; on Linux: qemu-img convert -O raw IMAGE.vhdx IMAGE.raw"),
    "vmdk": HowToRead(
        fr="Disque virtuel VMDK « stream-optimized » (le format des paquets OVF) : vSphere l'importe avec un "
           "descripteur OVF (« Déployer un modèle OVF », ovftool), VirtualBox aussi ; sous Linux : qemu-img convert "
           "-O raw IMAGE.vmdk IMAGE.raw (ou -O vmdk -o subformat=monolithicSparse pour VMware Workstation)",
        en="Stream-optimized VMDK virtual disk (the format OVF packages carry): vSphere imports it with an OVF "
           "descriptor (\"Deploy OVF Template\", ovftool), so does VirtualBox; on Linux: qemu-img convert -O raw "
           "IMAGE.vmdk IMAGE.raw (or -O vmdk -o subformat=monolithicSparse for VMware Workstation)"),
    "stored": HowToRead(
        fr="Fichier tel que l'application l'a produit lors de la sauvegarde.",
        en="The file as the application produced it at backup time."),
    "snapshot": HowToRead(
        fr="snapshot.json : la description de la sauvegarde (date, source, cohérence, configuration relevée).",
        en="snapshot.json: the backup's description (time, source, consistency, recorded configuration)."),
}

_HEAD = {
    "fr": ("Export Do'BaaS des données de {client}\n"
           "Produit le {when} par `dobaas export`.\n\n"
           "Chaque sauvegarde est dans un dossier CLIENT/SOURCE[/UNITÉ]/DATE_IDENTIFIANT.\n"
           "MANIFEST.json liste chaque fichier (taille, SHA-256, sauvegarde, source, date) ; vérifier l'export :\n"
           "  sha256sum -c SHA256SUMS\n\n"
           "Formats présents et comment les lire :\n"),
    "en": ("Do'BaaS export of the data of {client}\n"
           "Made on {when} by `dobaas export`.\n\n"
           "Each backup is in a folder CLIENT/SOURCE[/UNIT]/DATE_ID.\n"
           "MANIFEST.json lists every file (size, SHA-256, backup, source, time); to check the export:\n"
           "  sha256sum -c SHA256SUMS\n\n"
           "Formats in this export and how to read them:\n"),
}


def render(lang: str, client: str, when: str, sections: dict[str, tuple[HowToRead, list[str]]]) -> str:
    """The text for ``lang`` (fr | en); ``sections``: format label -> (how to read it, example paths)."""
    out = [_HEAD[lang].format(client=client, when=when)]
    for label in sorted(sections):
        how, paths = sections[label]
        out.append(f"\n== {label} ==\n{getattr(how, lang)}\n")
        shown = paths[:5]
        out += [f"  - {p}\n" for p in shown]
        if len(paths) > len(shown):
            out.append(f"  … (+{len(paths) - len(shown)})\n" if lang == "en" else
                       f"  … (et {len(paths) - len(shown)} autres)\n")
    return "".join(out)
