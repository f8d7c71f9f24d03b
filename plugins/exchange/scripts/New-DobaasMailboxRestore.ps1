# Mailboxes restored from a mounted recovery database into the live mailboxes (New-MailboxRestoreRequest), each
# under a "Restored <recovery database>" folder; the requests' names and status are returned.
param(
    [Parameter(Mandatory = $true)][string]$RecoveryName,
    [Parameter(Mandatory = $true)][string[]]$Mailboxes
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn -ErrorAction SilentlyContinue
$requests = @()
foreach ($m in $Mailboxes) {
    $r = New-MailboxRestoreRequest -SourceDatabase $RecoveryName -SourceStoreMailbox $m -TargetMailbox $m -TargetRootFolder "Restored $RecoveryName" -AllowLegacyDNMismatch
    $requests += @{ Mailbox = $m; Name = "$($r.Name)"; Status = "$($r.Status)" }
}
ConvertTo-Json -Depth 3 -InputObject @{ RecoveryDatabase = $RecoveryName; Requests = $requests }
