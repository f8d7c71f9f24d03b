"""Errors that reach the user: each carries a one-line message and an exit code that scripts can rely on.
The exit codes are defined here and nowhere else (documented in docs/cli.md)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed (a source of a run failed; the others still ran)
EXIT_USAGE = 2  # the command line is wrong
EXIT_DAMAGE = 3  # damage found (verify, a restore that met damaged files, a damaged manifest)
EXIT_PASSPHRASE = 4  # wrong passphrase or key
EXIT_NOT_FOUND = 5  # vault, snapshot or item not found
EXIT_BAD_INPUT = 6  # a bad input file (policy, extents, image)
EXIT_BUSY = 7  # the vault is locked by another process
EXIT_STORAGE = 8  # storage full or unwritable
EXIT_PARTIAL = 9  # done, but some entries were skipped or could not be read
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT


class DobaasError(Exception):
    """Base class: a failure explained in one line, never a traceback."""

    exit_code = EXIT_FAILED


class UsageError(DobaasError):
    exit_code = EXIT_USAGE


class WrongPassphrase(DobaasError):
    exit_code = EXIT_PASSPHRASE


class NotFound(DobaasError):
    exit_code = EXIT_NOT_FOUND


class BadInput(DobaasError):
    exit_code = EXIT_BAD_INPUT


class VaultBusy(DobaasError):
    exit_code = EXIT_BUSY


class StorageFull(DobaasError):
    exit_code = EXIT_STORAGE


class AppendOnly(DobaasError):
    """The vault refuses deletions (append-only client access): retention and space reclaim are the
    provider's maintenance, not the client's."""


class IntegrityError(DobaasError):
    """Stored data failed authentication or its hash: the vault holds damaged bytes."""

    exit_code = EXIT_DAMAGE


class WindowClosed(BaseException):
    """The backup window ended: the run in progress stops at once (BaseException, so no source's error
    handling swallows it); nothing partial is published and the next run resumes."""
