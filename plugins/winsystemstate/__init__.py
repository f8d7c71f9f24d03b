"""Windows system state (Windows Server Backup's wbadmin) over the Windows channel."""
