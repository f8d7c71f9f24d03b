"""The policy model: validation with errors that name the file, the line and the field."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import BadInput
from orchestrator.plugin import registry
from orchestrator.plugin.base import PasswordFields, SourceConfig
from orchestrator.policy.yamlpos import Located, YamlError, load_located
from orchestrator.secret import read_secret

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
INLINE_SECRETS = {"password", "passphrase", "secret", "token", "key"}


class Retention(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep_last: int | None = Field(default=None, ge=1)
    keep_hourly: int | None = Field(default=None, ge=0)
    keep_daily: int | None = Field(default=None, ge=0)
    keep_weekly: int | None = Field(default=None, ge=0)
    keep_monthly: int | None = Field(default=None, ge=0)
    keep_yearly: int | None = Field(default=None, ge=0)


class EmailAlerts(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    to: list[str] = Field(min_length=1)
    sender: str = Field(alias="from")
    smtp: str = "localhost:25"  # host:port
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None


class Alerts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook: str | None = None  # JSON POST
    email: EmailAlerts | None = None
    no_success_hours: float | None = Field(default=None, gt=0)
    change_rate_limit: float = Field(default=0.002, gt=0)  # of the initially saved volume, per run (daily)


class Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(default=3, ge=0, le=20)
    delay_minutes: float = Field(default=5, gt=0)  # first delay; each next one is three times longer


class RemoteSettings(PasswordFields):
    """How to reach an sftp:// vault: the server's published host key, and our key or password."""

    model_config = ConfigDict(extra="forbid")
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    identity_file: str | None = None

    def password(self) -> str | None:
        return read_secret(self.password_env, self.password_file, "remote", "password")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str = Field(pattern=NAME)
    client: str = Field(pattern=NAME)
    vault: str
    schedule: str | None = None
    retention: Retention = Retention()
    passphrase_env: str | None = None
    passphrase_file: str | None = None
    catalog: str | None = None
    alerts: Alerts | None = None
    retry: Retry = Retry()
    window: str | None = None  # 'HH:MM-HH:MM', local time: runs start inside it and stop at its end
    quota: str | None = None  # the subscribed volume, e.g. 500GiB
    concurrency: int = Field(default=1, ge=1, le=16)  # sources (units) of this policy backed up at once
    remote: RemoteSettings | None = None  # access to an sftp:// vault
    bandwidth_limit: str | None = None  # uploads to a remote vault, e.g. 20MiB/s
    #: the client's written agreement to store outside France (its reference); required for a non-FR vault
    residency_consent: str | None = None
    sources: list[dict[str, Any]] = Field(min_length=1)

    # filled after validation: the plugin-specific model of each source
    source_configs: list[SourceConfig] = Field(default_factory=list, exclude=True)
    file: str = Field(default="", exclude=True)

    @field_validator("vault")
    @classmethod
    def _vault(cls, v: str) -> str:
        if re.match(r"^[a-z][a-z0-9+]*://", v) and not v.startswith(("file://", "sftp://")):
            raise ValueError("the vault is a path, file:// or sftp://user@host[:port]/path")
        if v.startswith("sftp://"):
            from orchestrator.vault.backend.sftp import parse_url

            try:
                parse_url(v)
            except Exception as e:
                raise ValueError(str(e)) from None
            return v
        return v.removeprefix("file://")

    @field_validator("bandwidth_limit")
    @classmethod
    def _bandwidth(cls, v: str | None) -> str | None:
        if v is not None:
            from orchestrator.vault.backend.opener import bandwidth

            try:
                bandwidth(v)
            except Exception as e:
                raise ValueError(str(e)) from None
        return v

    def backend(self):  # type: ignore[no-untyped-def]
        """The vault's storage backend (a remote vault is reached with the policy's ``remote:`` access)."""
        from orchestrator.vault.backend.opener import RemoteAccess, open_backend

        access = None
        if self.vault.startswith("sftp://"):
            r = self.remote or RemoteSettings()
            access = RemoteAccess(r.known_hosts, r.identity_file, r.password(), self.bandwidth_limit)
        return open_backend(self.vault, access)

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            from orchestrator.scheduler.window import parse_window

            parse_window(v)
        return v

    @field_validator("quota")
    @classmethod
    def _quota(cls, v: str | None) -> str | None:
        if v is not None:
            from orchestrator.units import parse_size

            try:
                parse_size(v, "quota")
            except Exception as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        from croniter import croniter

        if v is not None and (len(v.split()) != 5 or not croniter.is_valid(v)):
            raise ValueError("a schedule is a cron expression with 5 fields, e.g. '0 22 * * *'")
        return v

    def passphrase(self) -> str | None:
        return read_secret(self.passphrase_env, self.passphrase_file, self.file, "passphrase")


class PolicyError(BadInput):
    """A policy problem located in its file: ``file:line: field: message``."""


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _raise(located: Located, file: str, prefix: tuple, err: ValidationError) -> None:
    first = err.errors()[0]
    loc = (*prefix, *first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "required field is missing"
    raise PolicyError(f"{file}:{located.line_of(loc)}: {_field(loc)}: {msg}")


def parse_policy(text: str, file: str) -> Policy:
    try:
        located = load_located(text, file)
    except YamlError as e:
        raise PolicyError(str(e)) from None
    if not isinstance(located.data, dict):
        raise PolicyError(f"{file}:1: a policy is a YAML mapping (policy:, client:, vault:, sources: …)")
    try:
        policy = Policy.model_validate(located.data)
    except ValidationError as e:
        _raise(located, file, (), e)
    policy.file = file
    names: set[str] = set()
    for i, src in enumerate(policy.sources):
        where = ("sources", i)
        if not isinstance(src, dict):
            raise PolicyError(f"{file}:{located.line_of(where)}: sources.{i}: a source is a mapping")
        for key in src:
            if key.lower() in INLINE_SECRETS:
                raise PolicyError(f"{file}:{located.line_of((*where, key))}: sources.{i}.{key}: secrets are never "
                                  f"written inline: use {key}_env or {key}_file")
        plugin_name = src.get("plugin")
        if not plugin_name:
            raise PolicyError(f"{file}:{located.line_of(where)}: sources.{i}.plugin: required field is missing")
        try:
            plugin = registry.load(str(plugin_name))
        except Exception as e:
            raise PolicyError(f"{file}:{located.line_of((*where, 'plugin'))}: sources.{i}.plugin: {e}") from None
        try:
            cfg = plugin.Config.model_validate(src)
        except ValidationError as e:
            _raise(located, file, where, e)
        if cfg.name in names:
            raise PolicyError(f"{file}:{located.line_of((*where, 'name'))}: sources.{i}.name: "
                              f"duplicate source name {cfg.name!r}")
        names.add(cfg.name)
        policy.source_configs.append(cfg)
    return policy


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise BadInput(f"policy file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"policy file {path} cannot be read ({e})") from None
    return parse_policy(text, path)
