"""The oracle source of a policy (docs/plugins/oracle.md)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.plugin.base import PasswordFields, SourceConfig

SID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")


class SshTarget(BaseModel):
    """The database host, reached over SSH with a key and a known host key (never learned)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str = "oracle"
    identity_file: str
    known_hosts: str


class OracleConfig(SourceConfig, PasswordFields):
    dsn: str  # host:port/service, for discovery (python-oracledb, thin mode)
    user: str  # needs SELECT on the v$ views it reads (docs/plugins/oracle.md: grants)
    ssh: SshTarget
    oracle_home: str
    oracle_sid: str
    staging_dir: str  # on the database host: RMAN writes the pieces there; emptied once they are in the vault
    level0_every: int = Field(7, ge=1)  # a level 0 every N runs, level 1 in between
    delete_archivelogs: bool = False  # DELETE the archived logs a published snapshot holds

    @field_validator("oracle_sid")
    @classmethod
    def _sid(cls, v: str) -> str:
        if not SID.match(v):
            raise ValueError("an Oracle SID: a letter, then up to 11 letters, digits or _")
        return v

    @field_validator("oracle_home", "staging_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or "'" in v:
            raise ValueError("an absolute path on the database host, without quotes")
        return v.rstrip("/")
