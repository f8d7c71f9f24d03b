"""KVM/QEMU virtual machines through libvirt: checkpoints + NBD pull backups (changed-block tracking)."""
