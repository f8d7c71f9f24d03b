# SharePoint farm backup (Backup-SPFarm) to a folder of a share: Full, or Differential against the last full
# backup recorded in that folder's spbrtoc.xml; then the history entry SharePoint recorded for it.
# Needs a farm administrator account with the SharePoint_Shell_Access role, run on a SharePoint server; the
# SQL Server service account and the SharePoint timer service account need write access to the share.
param(
    [Parameter(Mandatory = $true)][string]$Directory,
    [Parameter(Mandatory = $true)][ValidateSet('Full', 'Differential')][string]$BackupMethod,
    [string]$Item
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.SharePoint.PowerShell -ErrorAction SilentlyContinue
if (-not (Get-Command Backup-SPFarm -ErrorAction SilentlyContinue)) {
    throw "the SharePoint cmdlets are not available: not a SharePoint server, or the account lacks SharePoint_Shell_Access"
}
$admin = Get-Service -Name SPAdminV4 -ErrorAction SilentlyContinue
if ($null -eq $admin -or $admin.Status -ne 'Running') {
    throw "the SharePoint Administration service (SPAdminV4) is not running: Start-Service SPAdminV4"
}
$params = @{ Directory = $Directory; BackupMethod = $BackupMethod }
if ($Item) { $params.Item = $Item }
Backup-SPFarm @params
$last = Get-SPBackupHistory -Directory $Directory -ShowBackup | Sort-Object StartTime | Select-Object -Last 1
if ($null -eq $last) { throw "Backup-SPFarm left no entry in $Directory\spbrtoc.xml" }
if ($last.ErrorCount -gt 0) {
    throw "Backup-SPFarm finished with $($last.ErrorCount) error(s): see $($last.Directory)spbackup.log"
}
ConvertTo-Json -Depth 3 -InputObject @{
    Id = "$($last.SelfId)"; Method = "$($last.Method)"; Directory = "$($last.Directory)"
    Top = "$($last.TopComponent)"; Warnings = $last.WarningCount
}
