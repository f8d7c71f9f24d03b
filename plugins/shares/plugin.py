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
from orchestrator.plugin.errors import UsageError
from orchestrator.plugin.secret import read_secret
from orchestrator.plugin.streams import Capture, TreeStream
from plugins.shares.sink import SmbSink
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

    def open_sink(self, meta: dict, url: str, options: dict) -> SmbSink:
        user = options.get("user") or meta.get("username")
        if not user:
            raise UsageError("the snapshot does not say which user writes to the share: give --user")
        env = options.get("password_env") or meta.get("password_env")
        file = None if options.get("password_env") else meta.get("password_file")
        if not env and not file:
            raise UsageError("the snapshot names no password source for the share: give --password-env VAR")
        parse_smb_url(url)
        sink = SmbSink(url, user, read_secret(env, file, f"share {url}", "password") or "")
        sink.connect()
        return sink

    def discover(self, cfg: SharesConfig) -> list[str]:
        return [cfg.url]

    @contextmanager
    def capture(self, cfg: SharesConfig, checkpoint: dict | None, ctx: CaptureContext) -> Iterator[Capture]:
        tree = SmbTree(cfg.url, cfg.username, cfg.password() or "", cfg.exclude)
        tree.connect()
        try:
            # how to reach the share again for in-place restores (names of secrets, never secrets)
            meta = {"url": cfg.url, "username": cfg.username, "password_env": cfg.password_env,
                    "password_file": cfg.password_file}
            yield Capture([TreeStream(tree.root, tree)], consistency="file-level (SMB)", meta=meta)
        finally:
            tree.close()
