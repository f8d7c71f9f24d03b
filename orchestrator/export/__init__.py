"""Snapshots handed back in standard formats (reversibility)."""
