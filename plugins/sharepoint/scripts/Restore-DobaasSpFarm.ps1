# A farm backup (full, or differential with its full in the same folder) restored with Restore-SPFarm onto the
# farm this host belongs to (a recovery farm: dobaas refuses the source farm unless asked on purpose).
param(
    [Parameter(Mandatory = $true)][string]$Directory,
    [Parameter(Mandatory = $true)][string]$BackupId,
    [Parameter(Mandatory = $true)][string]$Item
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.SharePoint.PowerShell -ErrorAction SilentlyContinue
if (-not (Get-Command Restore-SPFarm -ErrorAction SilentlyContinue)) {
    throw "the SharePoint cmdlets are not available: not a SharePoint server, or the account lacks SharePoint_Shell_Access"
}
Restore-SPFarm -Directory $Directory -BackupId $BackupId -Item $Item -RestoreMethod Overwrite -Confirm:$false
$last = Get-SPBackupHistory -Directory $Directory -ShowRestore | Sort-Object StartTime | Select-Object -Last 1
if ($null -eq $last -or $last.ErrorCount -gt 0) {
    throw "Restore-SPFarm finished with errors: see $Directory\spbr*\sprestore.log"
}
ConvertTo-Json -Depth 3 -InputObject @{ Id = "$($last.SelfId)"; Top = "$($last.TopComponent)"; Warnings = $last.WarningCount }
