# A site collection restored from a Backup-SPSite file to a URL where none exists (never over a live site).
param(
    [Parameter(Mandatory = $true)][string]$Identity,
    [Parameter(Mandatory = $true)][string]$Path
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.SharePoint.PowerShell -ErrorAction SilentlyContinue
if (Get-SPSite -Identity $Identity -ErrorAction SilentlyContinue) {
    throw "a site collection already exists at ${Identity}, choose another URL"
}
Restore-SPSite -Identity $Identity -Path $Path -Confirm:$false
$site = Get-SPSite -Identity $Identity
ConvertTo-Json -Depth 3 -InputObject @{ Url = "$($site.Url)"; ContentDatabase = "$($site.ContentDatabase.Name)" }
