"""The ``shares`` source plugin: SMB/CIFS network shares."""
