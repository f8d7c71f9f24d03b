# Before a backup of one mailbox database on this server: the Exchange cmdlets, the state of this server's copy
# (Mounted: active, Healthy: passive) and of the VSS writer that backs it up (Microsoft Exchange Writer, or the
# Replica Writer for a passive copy) as vssadmin reports it: its name, id, state and last error. Read-only.
param(
    [Parameter(Mandatory = $true)][string]$Database
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn -ErrorAction SilentlyContinue
if (-not (Get-Command Get-MailboxDatabaseCopyStatus -ErrorAction SilentlyContinue)) {
    throw "the Exchange cmdlets are not available: not an Exchange server, or the account has no Exchange management role (Organization Management or Server Management)"
}
$db = Get-MailboxDatabase -Identity $Database -Status
$copy = Get-MailboxDatabaseCopyStatus -Identity "$Database\$env:COMPUTERNAME"
$active = "$($copy.Status)" -eq 'Mounted'
if (-not $active -and "$($copy.Status)" -ne 'Healthy') {
    throw "the copy of $Database on $env:COMPUTERNAME is $($copy.Status): only a Mounted or Healthy copy can be backed up"
}
$writerName = 'Microsoft Exchange Writer'
if (-not $active) { $writerName = 'Microsoft Exchange Replica Writer' }
$writers = (& vssadmin.exe list writers | Out-String)
$block = ($writers -split 'Writer name: ') | Where-Object { $_.StartsWith("'$writerName'") } | Select-Object -First 1
if (-not $block) {
    throw "the VSS writer '$writerName' is not registered: is the Microsoft Exchange Information Store service (MSExchangeIS) or, for a passive copy, the Replication service (MSExchangeRepl) running?"
}
$state = ([regex]::Match($block, 'State: \[\d+\] ([^\r\n]+)')).Groups[1].Value.Trim()
$lastError = ([regex]::Match($block, 'Last error: ([^\r\n]+)')).Groups[1].Value.Trim()
if ($state -ne 'Stable' -or $lastError -ne 'No error') {
    throw "the VSS writer '$writerName' is not ready: state $state, last error: $lastError"
}
ConvertTo-Json -Depth 3 -InputObject @{
    Computer = $env:COMPUTERNAME; Copy = "$($copy.Status)"; Writer = $writerName
    WriterId = ([regex]::Match($block, 'Writer Id: (\{[^}]+\})')).Groups[1].Value
    EdbFilePath = "$($db.EdbFilePath)"; LogFolderPath = "$($db.LogFolderPath)"; LogFilePrefix = "$($db.LogFilePrefix)"
}
