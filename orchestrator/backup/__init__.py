"""Backup runs: the lifecycle shared by every capture (lock, writer, parent, publish)."""
