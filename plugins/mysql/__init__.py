"""MySQL/MariaDB: consistent logical dumps in one transaction, binary-log archiving, point-in-time restore."""
