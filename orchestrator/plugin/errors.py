"""The errors a plugin raises, from the plugin API (plugins import only ``orchestrator.plugin``): each carries a
one-line message and the exit code scripts rely on (see orchestrator.errors)."""

from orchestrator.errors import (
    BadInput,
    DobaasError,
    IntegrityError,
    NotFound,
    StorageFull,
    UsageError,
    WrongPassphrase,
)

__all__ = ["BadInput", "DobaasError", "IntegrityError", "NotFound", "StorageFull", "UsageError", "WrongPassphrase"]
