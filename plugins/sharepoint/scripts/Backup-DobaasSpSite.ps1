# One site collection (Backup-SPSite) to a file of a share; the site is read-only while it is backed up.
param(
    [Parameter(Mandatory = $true)][string]$Identity,
    [Parameter(Mandatory = $true)][string]$Path
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.SharePoint.PowerShell -ErrorAction SilentlyContinue
if (-not (Get-Command Backup-SPSite -ErrorAction SilentlyContinue)) {
    throw "the SharePoint cmdlets are not available: not a SharePoint server, or the account lacks SharePoint_Shell_Access"
}
$site = Get-SPSite -Identity $Identity -ErrorAction SilentlyContinue
if ($null -eq $site) { throw "no site collection at $Identity" }
Backup-SPSite -Identity $Identity -Path $Path -Force
ConvertTo-Json -Depth 3 -InputObject @{ Url = "$($site.Url)"; Path = $Path; Size = (Get-Item -LiteralPath $Path).Length }
