"""SharePoint farms and site collections, backed up by SharePoint itself over the Windows channel."""
