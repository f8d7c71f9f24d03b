"""Errors that reach the user: each carries a one-line message and an exit code that scripts can rely on.

Exit codes (documented in docs/cli.md):
  0 success, 1 operation failed, 2 usage error, 3 damage found by verify,
  4 wrong passphrase or key, 5 vault or snapshot not found, 6 bad input file,
  7 vault busy (locked by another process), 8 storage full or unwritable.
"""

from __future__ import annotations


class DobaasError(Exception):
    """Base class: a failure explained in one line, never a traceback."""

    exit_code = 1


class UsageError(DobaasError):
    exit_code = 2


class WrongPassphrase(DobaasError):
    exit_code = 4


class NotFound(DobaasError):
    exit_code = 5


class BadInput(DobaasError):
    exit_code = 6


class VaultBusy(DobaasError):
    exit_code = 7


class StorageFull(DobaasError):
    exit_code = 8


class AppendOnly(DobaasError):
    """The vault refuses deletions (append-only client access): retention and space reclaim are the
    provider's maintenance, not the client's."""


class IntegrityError(DobaasError):
    """Stored data failed authentication or its hash: the vault holds damaged bytes."""

    exit_code = 3


class WindowClosed(BaseException):
    """The backup window ended: the run in progress stops at once (BaseException, so no source's error
    handling swallows it); nothing partial is published and the next run resumes."""
