"""SQL Server databases: full / differential / log chains written by SQL Server to a share (docs/plugins/mssql.md)."""
