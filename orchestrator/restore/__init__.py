"""Restores: choosing what to put back, where, and recording who did it."""
