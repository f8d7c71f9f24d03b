# A backed-up mailbox database brought back as a recovery database on this server, never over a live one: files
# copied to an empty TargetFolder, eseutil /r replays the logs, Clean Shutdown checked, created and mounted.
param(
    [Parameter(Mandatory = $true)][string]$Source,
    [Parameter(Mandatory = $true)][string]$TargetFolder,
    [Parameter(Mandatory = $true)][string]$EdbName,
    [Parameter(Mandatory = $true)][string]$LogFilePrefix,
    [Parameter(Mandatory = $true)][string]$RecoveryName
)
$ErrorActionPreference = 'Stop'
Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn -ErrorAction SilentlyContinue
if (-not (Get-Command New-MailboxDatabase -ErrorAction SilentlyContinue)) {
    throw "the Exchange cmdlets are not available: not an Exchange server, or the account has no Exchange management role (Organization Management or Server Management)"
}
if (Get-MailboxDatabase -Identity $RecoveryName -ErrorAction SilentlyContinue) {
    throw "a database named $RecoveryName already exists: choose another recovery database name"
}
$target = [IO.Path]::GetFullPath($TargetFolder).TrimEnd('\')
foreach ($live in (Get-MailboxDatabase)) {
    foreach ($p in @((Split-Path -Parent "$($live.EdbFilePath)"), "$($live.LogFolderPath)")) {
        $q = $p.TrimEnd('\')
        if ($target -eq $q -or $target.StartsWith("$q\") -or $q.StartsWith("$target\")) {
            throw "$TargetFolder overlaps the folder $p of the live database $($live.Name): choose an empty folder of its own"
        }
    }
}
if ((Test-Path -LiteralPath $target) -and (Get-ChildItem -LiteralPath $target -Force)) {
    throw "$TargetFolder is not empty: choose an empty folder"
}
New-Item -ItemType Directory -Path "$target\logs" -Force | Out-Null
Copy-Item -LiteralPath "$Source\$EdbName" -Destination $target
Copy-Item -Path "$Source\logs\*" -Destination "$target\logs"
$recovery = (& eseutil.exe /r $LogFilePrefix "/l$target\logs" "/s$target\logs" "/d$target" /i 2>&1 | Out-String)
if ($LASTEXITCODE -ne 0) { throw "eseutil /r failed (exit $LASTEXITCODE): $($recovery.Trim())" }
$header = (& eseutil.exe /mh "$target\$EdbName" | Out-String)
$state = ([regex]::Match($header, 'State: ([^\r\n]+)')).Groups[1].Value.Trim()
if ($state -ne 'Clean Shutdown') { throw "after soft recovery the database is in state '$state', not Clean Shutdown" }
New-MailboxDatabase -Recovery -Name $RecoveryName -Server $env:COMPUTERNAME -EdbFilePath "$target\$EdbName" -LogFolderPath "$target\logs" | Out-Null
Mount-Database -Identity $RecoveryName
ConvertTo-Json -InputObject @{ RecoveryDatabase = $RecoveryName; Server = $env:COMPUTERNAME; State = $state
                               EdbFilePath = "$target\$EdbName" }
