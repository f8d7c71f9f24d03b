"""Microsoft Exchange mailbox databases over the Windows channel (VSS with the Exchange writer)."""
