# VSS backup of a mailbox database by DiskShadow: see docs/plugins/exchange.md (Helper runs inside the session).
param(
    [Parameter(Mandatory = $true)][string]$Target,
    [Parameter(Mandatory = $true)][string]$WriterId,
    [Parameter(Mandatory = $true)][string]$Edb,
    [Parameter(Mandatory = $true)][string]$LogDir,
    [Parameter(Mandatory = $true)][string]$Prefix,
    [Parameter(Mandatory = $true)][int]$FromGeneration,
    [Parameter(Mandatory = $true)][int]$WaitMinutes,
    [Parameter(Mandatory = $true)][string]$Helper
)
$ErrorActionPreference = 'Stop'
$vols = @((Split-Path -Qualifier $Edb), (Split-Path -Qualifier $LogDir)) | Sort-Object -Unique
$free = @([char[]](72..90) | ForEach-Object { "$($_):" } | Where-Object { -not (Test-Path "$_\") })
if ($free.Count -lt $vols.Count) { throw "no free drive letter to expose the shadow copies on" }
$map = @{}
$dsh = @('set context persistent', "writer verify $WriterId", 'begin backup')
$exp = @()
for ($i = 0; $i -lt $vols.Count; $i++) {
    $map[$vols[$i]] = $free[$i]
    $dsh += "add volume $($vols[$i]) alias v$i"
    $exp += "expose %v$i% $($free[$i])"
}
$work = Join-Path $env:TEMP ('dobaas-' + [guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $work | Out-Null
$se = $map[(Split-Path -Qualifier $Edb)] + (Split-Path -NoQualifier $Edb)
$sl = $map[(Split-Path -Qualifier $LogDir)] + (Split-Path -NoQualifier $LogDir)
Set-Content "$work\copy.cmd" -Encoding ASCII ("@powershell -NoProfile -ExecutionPolicy Bypass -File `"$Helper`" " +
    "-E `"$se`" -L `"$sl`" -P $Prefix -From $FromGeneration -T `"$Target`" -Wait $WaitMinutes" +
    "`r`n@exit /b %ERRORLEVEL%")
$dsh += @('create') + $exp + @("exec `"$work\copy.cmd`"", 'end backup')
Set-Content "$work\backup.dsh" -Encoding ASCII $dsh
$out = (& diskshadow.exe /s "$work\backup.dsh" 2>&1 | Out-String)
$code = $LASTEXITCODE
Set-Content "$work\cleanup.dsh" -Encoding ASCII ($vols | ForEach-Object { "delete shadows exposed $($map[$_])" })
& diskshadow.exe /s "$work\cleanup.dsh" | Out-Null
Remove-Item -LiteralPath $work -Recurse -Force -ErrorAction SilentlyContinue
if ($code -ne 0) {
    $why = ''
    if (Test-Path "$Target\dobaas.failed") { $why = ' ' + (Get-Content "$Target\dobaas.failed" -Raw) }
    if (Test-Path "$Target\dobaas.abort") { $why = ' dobaas abandoned the backup.' }
    $tail = (($out -split "`r?`n") | Where-Object { $_ } | Select-Object -Last 2) -join ' / '
    throw "DiskShadow ended without completing the backup (exit $code):$why $tail; Exchange truncated no log"
}
ConvertTo-Json -InputObject @{ Computer = $env:COMPUTERNAME; Completed = $true }
