"""Hyper-V virtual machines over WinRM, disks read as VHDX files over SMB (docs/plugins/hyperv.md)."""
