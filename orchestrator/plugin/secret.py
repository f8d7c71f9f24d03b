"""Secrets for plugins, from the plugin API: from an environment variable or a file, never from a policy."""

from orchestrator.secret import read_secret

__all__ = ["read_secret"]
