"""Secrets come from an environment variable or a file, never from a policy itself."""

from __future__ import annotations

import os

from orchestrator.errors import BadInput


def read_secret(env: str | None, file: str | None, who: str, field: str) -> str | None:
    """The secret named by ``<field>_env`` or ``<field>_file`` (None when neither is set); a variable that is
    not set or a file that cannot be read is an error naming ``who`` and the field."""
    if env:
        if env not in os.environ:
            raise BadInput(f"{who}: {field}_env names {env}, which is not set")
        return os.environ[env]
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                return f.read().rstrip("\n")
        except OSError as e:
            raise BadInput(f"{who}: {field}_file {file}: {e.strerror}") from None
    return None
