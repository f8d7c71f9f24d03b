"""The base class every source plugin derives from (the four questions of the plugin contract).

1. *What is there?* ``discover``.
2. *Capture it consistently*: ``capture`` is a context manager: quiesce and snapshot on entry, yield the typed
   streams, release on exit (always, even when the backup fails), as fast as possible.
3. *What changed since the last capture?*: ``capture`` receives the checkpoint stored with the previous snapshot
   of the same source. A token it cannot use must lead to a full capture and a warning, never a wrong
   incremental.
4. *Put it back*: ``restore_target`` / ``restore`` (plugins whose data goes back somewhere other than a local
   directory), then ``verify``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.plugin.streams import Capture


class SourceConfig(BaseModel):
    """Fields every source has in a policy; plugins extend it with their own."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    plugin: str


class SourcePlugin(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[SourceConfig]] = SourceConfig

    def discover(self, cfg: Any) -> list[str]:
        """Items this source would capture (paths, databases, VMs), for `dobaas policy check --discover`."""
        return []

    @abstractmethod
    def capture(self, cfg: Any, checkpoint: dict | None) -> AbstractContextManager[Capture]:
        """Quiesce, snapshot and yield the capture; release on exit."""

    def restore(self, cfg: Any, snapshot_meta: dict, files: Iterator[tuple[dict, bytes | None]]) -> None:
        """Write restored entries back to the source itself (for in-place restores of remote sources)."""
        raise NotImplementedError(f"plugin {self.name} restores to a local directory only")
