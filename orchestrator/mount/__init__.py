"""Read-only views of snapshots: FUSE mounts, and the filesystems inside disk images."""
