"""The base class every source plugin derives from (the four questions of the plugin contract; docs/plugins.md).

1. *What is there?* ``discover`` (and ``units``: the independent things a source stands for, e.g. VMs).
2. *Capture it consistently*: ``capture`` is a context manager: quiesce and snapshot on entry, yield the typed
   streams, release on exit (always, even when the backup fails), as fast as possible. ``end_run`` releases
   what was kept between units once the run is over.
3. *What changed since the last capture?*: ``capture`` receives the checkpoint stored with the previous snapshot
   of the same source. A token it cannot use must lead to a full capture and a warning, never a wrong
   incremental.
4. *Put it back*: the core reads and checks the vault side; the plugin does the product side, with the
   command's options as typed: ``check_machine_restore`` / ``restore_machine`` (VMs), ``restore_database``
   (databases), ``open_sink`` (file destinations other than a local directory). Each verifies what it restored.
5. *Give it back*: ``export_parts`` lists the files of an export in standard formats (the end-of-contract
   reversibility), with how to read each; the default covers trees, images and stored streams.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.plugin.export import ExportPart, Items, default_parts
from orchestrator.plugin.hooks import Hooks
from orchestrator.plugin.streams import Capture, TreeSink
from orchestrator.secret import read_secret


class SourceConfig(BaseModel):
    """Fields every source has in a policy; plugins extend it with their own."""

    model_config = ConfigDict(extra="forbid", strict=True)  # as the policy itself (see policy.model.STRICT)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    plugin: str
    hooks: Hooks | None = None  # commands before/after each unit of this source


class PasswordFields(BaseModel):
    """``password_env`` / ``password_file`` for sources that log in somewhere (secrets are never inline)."""

    password_env: str | None = None
    password_file: str | None = None

    def password(self) -> str | None:
        """The secret, or None when neither field is set; a named variable or file that is missing is an error."""
        return read_secret(self.password_env, self.password_file, f"source {getattr(self, 'name', '?')}",
                           "password")


class MachineRestoreOptions(TypedDict, total=False):
    """What `dobaas restore vm` passes to a VM plugin: the command's values as typed (None when absent); each
    plugin uses the ones that mean something for its hypervisor and checks them itself."""

    name: str  # the new VM's name
    target_dir: str | None  # KVM: local directory for the disks; Hyper-V: the host's directory for them
    start: bool  # start the new VM and wait until it runs
    format: str  # KVM: qcow2 | raw
    uri: str | None  # KVM: libvirt URI; VMware: vCenter/ESXi host (default: the one backed up from)
    host: str | None  # Hyper-V: the host to create the VM on
    connect: bool  # Hyper-V: connect the network adapters to their original switches
    datastore: str | None  # VMware
    esx_host: str | None  # VMware
    pool: str | None  # VMware
    folder: str | None  # VMware
    datacenter: str | None  # VMware
    user: str | None  # hypervisor user (default: the policy's)
    password_env: str | None  # variable holding that user's password (default: the policy's)
    password_file: str | None
    #: VMware: a progress callback factory for the upload of each disk after the local check
    upload_progress: Callable[[str, int], Callable[[int], None] | None] | None


@dataclass
class CaptureContext:
    """Where a capture goes, as far as a plugin may know it (never the vault itself)."""

    #: which unit of the source (a VM of a kvm source); "" for sources that are one unit
    unit: str = ""
    #: stable token of (vault, snapshot name): plugins name their own hypervisor-side state with it
    #: (checkpoints), so two policies backing up the same VM to two vaults never delete each other's
    lineage: str = ""


class SourcePlugin(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[SourceConfig]] = SourceConfig
    #: the disk format `dobaas export` writes by default: the hypervisor's own
    native_image_format: ClassVar[str] = "raw"

    def discover(self, cfg: Any) -> list[str]:
        """Items this source would capture (paths, databases, VMs), for `dobaas policy check --discover`."""
        return []

    def units(self, cfg: Any) -> list[str]:
        """The independent things this source captures, each its own snapshot ``client/source/unit`` with its
        own checkpoint chain (the VMs matched by a kvm source). ``[""]``: the source is one unit. Raise a
        DobaasError when a named unit does not exist."""
        return [""]

    @abstractmethod
    def capture(self, cfg: Any, checkpoint: dict | None, ctx: CaptureContext) -> AbstractContextManager[Capture]:
        """Quiesce, snapshot and yield the capture; release on exit (the exception, if any, tells whether the
        snapshot was published)."""

    def end_run(self) -> None:
        """The run (or command) is over: release what the plugin kept between units (API sessions, …). Called
        once per plugin used, whatever happened; the process may end right after without running atexit."""
        return None

    def machine_staging_dir(self, options: MachineRestoreOptions) -> str | None:
        """Where the core writes a VM's disks as raw files before ``restore_machine``: a local directory the
        plugin keeps them in (KVM: the storage pool), or None for a temporary one the core removes afterwards
        (the plugin uploads or converts them)."""
        return None

    def check_machine_restore(self, meta: dict, options: MachineRestoreOptions) -> None:
        """Refuse a VM restore before any byte is written (name taken, files in the way, hypervisor down)."""
        raise NotImplementedError(f"plugin {self.name} does not restore virtual machines")

    def restore_machine(self, meta: dict, disk_files: dict[str, str], options: MachineRestoreOptions) -> dict:
        """Make a new VM from a snapshot's saved configuration (``meta``) and its disks, which the core has
        written as raw files ({item name: path}) and checked against the snapshot. Returns what to report."""
        raise NotImplementedError(f"plugin {self.name} does not restore virtual machines")

    def restore_database(self, meta: dict, items: list[str], write_item: Callable[[str, BinaryIO], int],
                         options: dict) -> dict:
        """Restore a database snapshot into a server: ``write_item(name, out)`` streams a stored item (a dump, an
        archived log) from the vault, authenticated, into ``out``. Returns what to report (verification too)."""
        raise NotImplementedError(f"plugin {self.name} does not restore databases")

    def verify_backups(self, meta: dict, items: list[str], write_item: Callable[[str, BinaryIO], int]) -> list[str]:
        """The product's own check of a database snapshot's stored backups (``dobaas verify --deep``: SQL
        Server's RESTORE VERIFYONLY). Returns what is wrong, one line each; nothing is restored."""
        raise NotImplementedError(f"plugin {self.name} has no deep check of its backups")

    def open_sink(self, meta: dict, url: str, options: dict) -> TreeSink:
        """A connected destination for restored files at ``url`` (the source itself for in-place restores of
        remote sources such as shares), with the snapshot's connection settings (``meta``) and the user's
        overrides (``options``: ``user``, ``password_env``)."""
        raise NotImplementedError(f"plugin {self.name} restores to a local directory only")

    def export_parts(self, meta: dict, items: Items, tree_format: str, image_format: str) -> list[ExportPart]:
        """The files of an export of one snapshot in standard formats, each with how to read it (see
        orchestrator.plugin.export): the core's default for the items, plus what only the plugin can make."""
        return default_parts(items, tree_format, image_format)
