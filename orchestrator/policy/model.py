"""The policy model: validation with errors that name the file, the line and the field."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import BadInput
from orchestrator.plugin import registry
from orchestrator.plugin.base import PasswordFields, SourceConfig
from orchestrator.plugin.hooks import Hooks
from orchestrator.policy.budget import DAILY_CHANGE_BUDGET
from orchestrator.policy.yamlpos import Located, YamlError, load_located
from orchestrator.secret import read_secret

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
INLINE_SECRETS = {"password", "passphrase", "secret", "token", "key"}


#: policies are validated strictly: YAML reads `true`, `1e30` (a string in YAML 1.1) or `'1'` as something else
#: than a person meant, and a retention count of `true` must be refused, not read as 1
STRICT = ConfigDict(extra="forbid", strict=True)
MAX_KEEP = 100_000  # snapshots a rule may keep: far beyond any subscription, small enough to compute with


class Retention(BaseModel):
    model_config = STRICT
    keep_last: int | None = Field(default=None, ge=1, le=MAX_KEEP)
    keep_hourly: int | None = Field(default=None, ge=0, le=MAX_KEEP)
    keep_daily: int | None = Field(default=None, ge=0, le=MAX_KEEP)
    keep_weekly: int | None = Field(default=None, ge=0, le=MAX_KEEP)
    keep_monthly: int | None = Field(default=None, ge=0, le=MAX_KEEP)
    keep_yearly: int | None = Field(default=None, ge=0, le=MAX_KEEP)


class EmailAlerts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    to: list[str] = Field(min_length=1)
    sender: str = Field(alias="from")
    smtp: str = "localhost:25"  # host:port
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None


AlertKind = Literal["failed", "interrupted", "warnings", "change-rate", "no-success", "quota"]


class Alerts(BaseModel):
    model_config = STRICT
    webhook: str | None = None  # JSON POST
    email: EmailAlerts | None = None
    no_success_hours: float | None = Field(default=None, gt=0, le=24 * 366)
    #: of the initially saved volume, per run (daily)
    change_rate_limit: float = Field(default=DAILY_CHANGE_BUDGET, gt=0, le=1)
    #: which conditions are sent (all by default); the others are only recorded
    conditions: list[AlertKind] = Field(default_factory=lambda: list(get_args(AlertKind)), min_length=1)

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        if v is not None:
            from urllib.parse import urlsplit

            u = urlsplit(v)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError("a webhook is an http:// or https:// URL with a host name")
        return v


class Retry(BaseModel):
    model_config = STRICT
    attempts: int = Field(default=3, ge=0, le=20)
    #: first delay; each next one is three times longer (never more than a week: MAX_RETRY_DELAY)
    delay_minutes: float = Field(default=5, gt=0, le=24 * 60)


class RemoteSettings(PasswordFields):
    """How to reach a remote vault. sftp://: the server's published host key, and our key or password.
    s3://: the endpoint, region, CA and the access key pair (secrets named by variable or file, never inline)."""

    model_config = STRICT
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    identity_file: str | None = None
    endpoint: str | None = None  # https://s3.provider.fr (default: AWS, or DOBAAS_S3_ENDPOINT)
    region: str | None = None
    ca_file: str | None = None
    access_key_env: str | None = None
    access_key_file: str | None = None
    secret_key_env: str | None = None
    secret_key_file: str | None = None

    def password(self) -> str | None:
        return read_secret(self.password_env, self.password_file, "remote", "password")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            u = urlparse(v)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError("the S3 endpoint is an http:// or https:// URL with a host name")
        return v

    def s3_access(self):
        """The S3 access this block gives, each part not given here taken from the AWS_* / DOBAAS_S3_* environment."""
        from orchestrator.vault.backend.opener import S3Access

        env = S3Access.from_env()
        return S3Access(self.endpoint or env.endpoint, self.region or env.region,
                        read_secret(self.access_key_env, self.access_key_file, "remote", "access_key")
                        or env.access_key,
                        read_secret(self.secret_key_env, self.secret_key_file, "remote", "secret_key")
                        or env.secret_key,
                        self.ca_file or env.ca_file)


def check_vault_location(v: str) -> str:
    """A vault location as policies write it: a path (``file://`` accepted), ``sftp://…`` or ``s3://…``."""
    if re.match(r"^[a-z][a-z0-9+]*://", v) and not v.startswith(("file://", "sftp://", "s3://")):
        raise ValueError("the vault is a path, file://, sftp://user@host[:port]/path or s3://bucket/prefix")
    if v.startswith(("s3://", "sftp://")):
        from orchestrator.vault.backend import s3, sftp

        try:
            (s3 if v.startswith("s3://") else sftp).parse_url(v)
        except Exception as e:
            raise ValueError(str(e)) from None
        return v
    return v.removeprefix("file://")


def open_vault_backend(vault: str, remote: RemoteSettings | None, bandwidth_limit: str | None):
    """The storage backend of ``vault``, a remote one reached with ``remote:``'s access."""
    from orchestrator.vault.backend.opener import RemoteAccess, open_backend

    access = RemoteAccess(bandwidth_limit=bandwidth_limit)
    if vault.startswith("sftp://"):
        r = remote or RemoteSettings()
        access = RemoteAccess(r.known_hosts, r.identity_file, r.password(), bandwidth_limit)
    elif vault.startswith("s3://"):
        access = RemoteAccess(bandwidth_limit=bandwidth_limit, s3=(remote or RemoteSettings()).s3_access())
    return open_backend(vault, access)


def check_bandwidth(v: str | None) -> str | None:
    if v is not None:
        from orchestrator.vault.backend.opener import bandwidth

        try:
            bandwidth(v)
        except Exception as e:
            raise ValueError(str(e)) from None
    return v


class VaultTarget(BaseModel):
    """Where snapshots go and how to get there: a vault, its remote access, its passphrase and upload limit."""

    model_config = STRICT
    vault: str
    passphrase_env: str | None = None
    passphrase_file: str | None = None
    remote: RemoteSettings | None = None  # access to an sftp:// or s3:// vault
    bandwidth_limit: str | None = None  # uploads to the vault (remote, or a mounted directory), e.g. 20MiB/s

    @field_validator("vault")
    @classmethod
    def _vault(cls, v: str) -> str:
        return check_vault_location(v)

    @field_validator("bandwidth_limit")
    @classmethod
    def _bandwidth(cls, v: str | None) -> str | None:
        return check_bandwidth(v)

    def backend(self):
        """The vault's storage backend (a remote vault is reached with the ``remote:`` access)."""
        return open_vault_backend(self.vault, self.remote, self.bandwidth_limit)

    def access_secrets(self) -> list[Callable[[], object]]:
        """Readers of the secrets reaching the vault needs (preflight calls each: a missing one is a problem)."""
        if self.remote is None:
            return []
        return [self.remote.password] + ([self.remote.s3_access] if self.vault.startswith("s3://") else [])


class CopyTo(VaultTarget):
    """A second vault (another site or provider) every snapshot of a run is copied to after the run (3-2-1)."""

    def passphrase(self) -> str | None:
        return read_secret(self.passphrase_env, self.passphrase_file, "copy_to", "passphrase")


class Policy(VaultTarget):
    policy: str = Field(pattern=NAME)
    client: str = Field(pattern=NAME)
    schedule: str | None = None
    retention: Retention = Retention()
    catalog: str | None = None
    alerts: Alerts | None = None
    retry: Retry = Retry()
    window: str | None = None  # 'HH:MM-HH:MM', local time: runs start inside it and stop at its end
    quota: str | None = None  # the subscribed volume, e.g. 500GiB
    concurrency: int = Field(default=1, ge=1, le=16)  # sources (units) of this policy backed up at once
    #: the client's written agreement to store outside France (its reference); required for a non-FR vault
    residency_consent: str | None = None
    hooks: Hooks | None = None  # commands before/after the whole run of the policy
    copy_to: CopyTo | None = None  # a second vault each run's snapshots are copied to
    sources: list[dict[str, Any]] = Field(min_length=1)

    # filled after validation: the plugin-specific model of each source
    source_configs: list[SourceConfig] = Field(default_factory=list, exclude=True)
    file: str = Field(default="", exclude=True)

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is not None:
            from orchestrator.policy.window import parse_window

            parse_window(v)
        return v

    @field_validator("quota")
    @classmethod
    def _quota(cls, v: str | None) -> str | None:
        if v is not None:
            from orchestrator.units import parse_size

            try:
                size = parse_size(v, "quota")
            except Exception as e:
                raise ValueError(str(e)) from None
            if not re.search(r"[A-Za-z]\s*$", v) or size < 2**20:
                raise ValueError(f"a quota is the subscribed volume with its unit, at least 1MiB (e.g. 500GiB), "
                                 f"not {v!r}")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        from croniter import croniter

        if v is not None and (len(v.split()) != 5 or not croniter.is_valid(v)):
            raise ValueError("a schedule is a cron expression with 5 fields, e.g. '0 22 * * *'")
        if v is not None and next_time(v) is None:
            raise ValueError(f"the schedule {v!r} never comes round (a date that does not exist, like 30 February)")
        return v

    def passphrase(self) -> str | None:
        return read_secret(self.passphrase_env, self.passphrase_file, self.file, "passphrase")


def next_time(schedule: str, after: datetime | None = None) -> datetime | None:
    """The next time a cron schedule fires after ``after`` (now), or None when it never does (``0 0 30 2 *``)
    or cannot be computed."""
    from croniter import croniter

    try:
        return croniter(schedule, after or datetime.now().astimezone()).get_next(datetime)
    except Exception:  # CroniterBadDateError and friends: no such date within croniter's search
        return None


class PolicyError(BadInput):
    """A policy problem located in its file: ``file:line: field: message``."""


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _problems(located: Located, file: str, prefix: tuple, err: ValidationError) -> list[str]:
    """Every error pydantic found, each as ``file:line: field: message``."""
    out = []
    for e in err.errors():
        loc = (*prefix, *e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field is missing"
        out.append(f"{file}:{located.line_of(loc)}: {_field(loc)}: {msg}")
    return out


def parse_policy(text: str, file: str) -> Policy:
    """Validate a policy; every problem of the file is reported at once (one line each), not the first only."""
    try:
        located = load_located(text, file)
    except YamlError as e:
        raise PolicyError(str(e)) from None
    if not isinstance(located.data, dict):
        raise PolicyError(f"{file}:1: a policy is a YAML mapping (policy:, client:, vault:, sources: …)")
    problems: list[str] = []
    policy: Policy | None = None
    # top-level keys starting with 'x-' are the policy author's (a place for YAML anchors that sources merge
    # with '<<: *defaults'), as in Compose files
    data = {k: v for k, v in located.data.items() if not k.startswith("x-")}
    try:
        policy = Policy.model_validate(data)
    except ValidationError as e:
        problems += _problems(located, file, (), e)
    configs: list[SourceConfig] = []
    names: set[str] = set()
    sources = located.data.get("sources")
    for i, src in enumerate(sources if isinstance(sources, list) else []):
        problems += _check_source(located, file, i, src, names, configs)
    if problems:
        raise PolicyError("\n".join(problems))
    assert policy is not None
    policy.file = file
    policy.source_configs = configs
    return policy


def _check_source(located: Located, file: str, i: int, src: Any, names: set[str],
                  configs: list[SourceConfig]) -> list[str]:
    where = ("sources", i)
    if not isinstance(src, dict):
        return [f"{file}:{located.line_of(where)}: sources.{i}: a source is a mapping"]
    problems = []
    for key in src:
        if key.lower() in INLINE_SECRETS:
            problems.append(f"{file}:{located.line_of((*where, key))}: sources.{i}.{key}: secrets are never "
                            f"written inline: use {key}_env or {key}_file")
    plugin_name = src.get("plugin")
    if not plugin_name:
        return [*problems, f"{file}:{located.line_of(where)}: sources.{i}.plugin: required field is missing"]
    try:
        plugin = registry.load(str(plugin_name))
    except Exception as e:
        return [*problems, f"{file}:{located.line_of((*where, 'plugin'))}: sources.{i}.plugin: {e}"]
    try:
        cfg = plugin.Config.model_validate(src)
    except ValidationError as e:
        return problems + _problems(located, file, where, e)
    if cfg.name in names:
        problems.append(f"{file}:{located.line_of((*where, 'name'))}: sources.{i}.name: "
                        f"duplicate source name {cfg.name!r}")
    names.add(cfg.name)
    configs.append(cfg)
    return problems


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise BadInput(f"policy file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"policy file {path} cannot be read ({e})") from None
    return parse_policy(text, path)
