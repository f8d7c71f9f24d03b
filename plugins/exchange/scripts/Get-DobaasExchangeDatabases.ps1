# The mailbox databases of the Exchange organisation as this server sees them (Get-MailboxDatabase -Status):
# paths, log prefix, circular logging, mounted state, and each copy's status in a DAG
# (Get-MailboxDatabaseCopyStatus), for dobaas to choose which copy to back up. Read-only.
param(
    [string[]]$Database
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn -ErrorAction SilentlyContinue
if (-not (Get-Command Get-MailboxDatabase -ErrorAction SilentlyContinue)) {
    throw "the Exchange cmdlets are not available: not an Exchange server, or the account has no Exchange management role (Organization Management or Server Management)"
}
$found = @()
foreach ($db in (Get-MailboxDatabase -Status)) {
    if ($Database -and ($Database -notcontains $db.Name)) { continue }
    $copies = @()
    foreach ($c in (Get-MailboxDatabaseCopyStatus -Identity $db.Name)) {
        $copies += @{ Server = "$($c.MailboxServer)"; Status = "$($c.Status)"; CopyQueueLength = $c.CopyQueueLength
                      ReplayQueueLength = $c.ReplayQueueLength; ActivationPreference = $c.ActivationPreference }
    }
    $dag = $null
    if ("$($db.MasterType)" -eq 'DatabaseAvailabilityGroup') { $dag = "$($db.MasterServerOrAvailabilityGroup)" }
    $found += @{ Name = $db.Name; Guid = "$($db.Guid)"; Server = "$($db.Server)"; Mounted = [bool]$db.Mounted
                 EdbFilePath = "$($db.EdbFilePath)"; LogFolderPath = "$($db.LogFolderPath)"
                 LogFilePrefix = "$($db.LogFilePrefix)"; CircularLoggingEnabled = [bool]$db.CircularLoggingEnabled
                 Dag = $dag; LastFullBackup = $db.LastFullBackup; Copies = $copies }
}
ConvertTo-Json -Depth 4 -InputObject @{ Computer = $env:COMPUTERNAME; Databases = $found }
