# Windows Server Backup: a system state backup of this computer (Active Directory, registry, boot files, COM+,
# certificate services, SYSVOL… whatever its VSS writers declare) to a share, then what it wrote.
# Needs the Windows-Server-Backup feature, an account in Backup Operators (or Administrators), and write access
# to the share for this computer's account. Run by dobaas over WinRM; an administrator may run it by hand.
param(
    [Parameter(Mandatory = $true)][string]$Target
)
$ErrorActionPreference = 'Stop'
if (-not (Get-Command wbadmin.exe -ErrorAction SilentlyContinue)) {
    throw "wbadmin.exe was not found: install the Windows Server Backup feature (Install-WindowsFeature Windows-Server-Backup)"
}
$output = (& wbadmin.exe start systemstatebackup "-backupTarget:$Target" -quiet 2>&1 | Out-String).Trim()
$code = $LASTEXITCODE
if ($code -ne 0) {
    # which VSS writer failed, in its own words (state and last error), for the support engineer
    $failed = @()
    $text = (& vssadmin.exe list writers | Out-String)
    foreach ($block in ($text -split 'Writer name: ')) {
        if ($block -match "^'([^']+)'[\s\S]*?State: \[\d+\] ([^\r\n]+)[\s\S]*?Last error: ([^\r\n]+)") {
            if ($Matches[3].Trim() -ne 'No error') {
                $failed += "$($Matches[1]): $($Matches[2].Trim()), last error: $($Matches[3].Trim())"
            }
        }
    }
    $detail = ''
    if ($failed.Count -gt 0) { $detail = ' VSS writers: ' + ($failed -join '; ') }
    throw "wbadmin failed (exit $code): $output$detail"
}
$version = ''
$versions = (& wbadmin.exe get versions "-backupTarget:$Target" | Out-String)
if ($versions -match 'Version identifier: ([^\r\n]+)') { $version = $Matches[1].Trim() }
ConvertTo-Json -Depth 3 -InputObject @{ Computer = $env:COMPUTERNAME; Version = $version; Output = $output }
