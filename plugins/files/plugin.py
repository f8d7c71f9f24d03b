"""``plugin: files``: local directory trees with full metadata.

Consistency: file-level. Each file is read once and checked again after reading; a file that changed while it
was read is kept and flagged with a warning (it may be internally inconsistent). Change detection: unchanged
size, mtime, ctime and inode since the previous snapshot mean the content is referenced without reading it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field, field_validator

from orchestrator.plugin.base import CaptureContext, SourceConfig, SourcePlugin
from orchestrator.plugin.errors import NotFound
from orchestrator.plugin.localtree.walk import LocalTree
from orchestrator.plugin.streams import Capture, TreeStream


class FilesConfig(SourceConfig):
    paths: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    one_file_system: bool = False

    @field_validator("paths")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        for p in v:
            if not os.path.isabs(p):
                raise ValueError(f"paths must be absolute, not {p!r}")
        return [os.path.normpath(p) for p in v]


class FilesPlugin(SourcePlugin):
    name = "files"
    Config = FilesConfig

    def discover(self, cfg: FilesConfig) -> list[str]:
        missing = [p for p in cfg.paths if not os.path.exists(p)]
        if missing:
            raise NotFound(f"{', '.join(missing)}: no such file or directory")
        return list(cfg.paths)

    @contextmanager
    def capture(self, cfg: FilesConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        streams = [TreeStream(p, LocalTree(p, cfg.exclude, cfg.one_file_system)) for p in cfg.paths]
        yield Capture(streams, consistency="file-level")
