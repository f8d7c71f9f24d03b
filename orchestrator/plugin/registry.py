"""Plugins are found through the ``dobaas.plugins`` entry-point group, so a third party can add one by
installing a package that declares ``[project.entry-points."dobaas.plugins"] name = "module:Class"``."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points

from orchestrator.errors import UsageError
from orchestrator.plugin.base import SourcePlugin

GROUP = "dobaas.plugins"
log = logging.getLogger(__name__)


@cache
def available() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load(name: str) -> SourcePlugin:
    ep = available().get(name)
    if ep is None:
        known = ", ".join(sorted(available())) or "none installed"
        raise UsageError(f"unknown plugin {name!r} (available: {known})")
    cls = ep.load()  # type: ignore[attr-defined]
    if not (isinstance(cls, type) and issubclass(cls, SourcePlugin)):
        raise UsageError(f"plugin {name!r} does not provide a SourcePlugin")
    return cls()


def end_run(names: set[str]) -> None:
    """Every plugin a run used releases what it kept between units (API sessions): commands may end with
    os._exit, which skips atexit handlers."""
    for name in sorted(names):
        try:
            load(name).end_run()
        except Exception as e:
            log.warning("plugin %s: releasing its sessions failed: %s", name, e)
