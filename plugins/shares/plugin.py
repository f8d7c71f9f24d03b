"""``plugin: shares``: SMB/CIFS network shares (Windows file servers, NAS, Samba).

Consistency: file-level, as seen over SMB; files held open by another client without sharing, or byte-range
locked, are reported as errors, never silently skipped. Unix permissions are not visible over SMB: modes are
derived from the read-only attribute and the Windows attributes are kept (``a``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field, field_validator, model_validator

from orchestrator.plugin.base import CaptureContext, PasswordFields, SourceConfig, SourcePlugin
from orchestrator.plugin.streams import Capture, TreeStream
from plugins.shares.smbtree import SmbTree, parse_smb_url


class SharesConfig(SourceConfig, PasswordFields):
    url: str
    username: str
    exclude: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parse_smb_url(v)
        return v

    @model_validator(mode="after")
    def _secret(self) -> SharesConfig:
        if not (self.password_env or self.password_file):
            raise ValueError("give password_env or password_file (secrets are never written inline)")
        return self


class SharesPlugin(SourcePlugin):
    name = "shares"
    Config = SharesConfig

    def discover(self, cfg: SharesConfig) -> list[str]:
        return [cfg.url]

    @contextmanager
    def capture(self, cfg: SharesConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        tree = SmbTree(cfg.url, cfg.username, cfg.password() or "", cfg.exclude)
        tree.connect()
        try:
            yield Capture([TreeStream(tree.root, tree)], consistency="file-level (SMB)")
        finally:
            tree.close()
