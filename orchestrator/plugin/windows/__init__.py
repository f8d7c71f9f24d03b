"""The Windows remote channel every Windows plugin shares (Hyper-V, SQL Server, Exchange, SharePoint, system
state): WinRM over HTTPS with a pinned certificate (or HTTP with NTLM message encryption), NTLM or Kerberos,
PowerShell scripts shipped as real ``.ps1`` files, sent with -EncodedCommand, answering JSON."""
