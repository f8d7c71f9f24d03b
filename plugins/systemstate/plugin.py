"""``plugin: systemstate``: enough to rebuild a Linux host by hand.

Captures /etc, the boot loader configuration (/boot/grub, /etc/default/grub), crontabs
(/var/spool/cron), any ``extra_paths``, and a generated ``system-info`` tree: installed packages, partition
tables (``sfdisk -d``), block devices, mounts, network, kernel and enabled services, with a MANIFEST.txt that
says what each file is and how to use it. Restorable as files like any other tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field

from orchestrator.plugin.base import CaptureContext, SourceConfig, SourcePlugin
from orchestrator.plugin.localtree.walk import LocalTree
from orchestrator.plugin.streams import Capture, TreeStream
from plugins.systemstate.collect import collect, write_manifest

DEFAULT_TREES = ["/etc", "/boot/grub", "/var/spool/cron"]


class SystemStateConfig(SourceConfig):
    trees: list[str] = Field(default_factory=lambda: list(DEFAULT_TREES))
    extra_paths: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=lambda: ["*.dpkg-old", "*.swp"])


class SystemStatePlugin(SourcePlugin):
    name = "systemstate"
    Config = SystemStateConfig

    def discover(self, cfg: SystemStateConfig) -> list[str]:
        return [p for p in [*cfg.trees, *cfg.extra_paths] if os.path.isdir(p)] + ["system-info"]

    @contextmanager
    def capture(self, cfg: SystemStateConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        tmp = tempfile.mkdtemp(prefix="dobaas-systemstate-")
        try:
            trees = [p for p in [*cfg.trees, *cfg.extra_paths] if os.path.isdir(p)]
            missing = [p for p in [*cfg.trees, *cfg.extra_paths] if not os.path.isdir(p)]
            info = os.path.join(tmp, "system-info")
            os.makedirs(info)
            collected = collect(info)
            write_manifest(info, collected, trees)
            streams = [TreeStream(p, LocalTree(p, cfg.exclude)) for p in trees]
            streams.append(TreeStream("system-info", LocalTree(info, display_root="system-info")))
            warnings = [f"{c.name} not captured: {c.note}" for c in collected if not c.ok]
            warnings += [f"{p} does not exist on this host" for p in missing if p not in DEFAULT_TREES]
            yield Capture(streams, consistency="file-level", warnings=warnings,
                          meta={"collected": [c.name for c in collected if c.ok]})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
