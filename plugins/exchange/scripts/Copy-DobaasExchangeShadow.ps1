# The step DiskShadow runs inside an Exchange backup session (exec), from the exposed shadow copies: the EDB
# (From 0) and the log generations above From copied to T, listed in dobaas.ready with the current log's
# generation (eseutil /ml); then it waits until dobaas writes dobaas.published (exit 0: DiskShadow ends the
# backup, Exchange truncates its logs) or dobaas.abort, T vanishing, or Wait minutes passing (exit 1: DiskShadow
# stops, no BackupComplete, every log stays).
# dobaas first runs it over WinRM with -Install: it then only writes itself to the server, for DiskShadow.
param(
    [bool]$Install,
    [string]$E,
    [string]$L,
    [string]$P,
    [int]$From,
    [string]$T,
    [int]$Wait
)
$ErrorActionPreference = 'Stop'
if ($Install) {
    $dir = Join-Path $env:ProgramData 'dobaas'
    New-Item -ItemType Directory -Path $dir -Force | Out-Null
    $path = Join-Path $dir 'Copy-DobaasExchangeShadow.ps1'
    Set-Content -LiteralPath $path -Encoding UTF8 -Value $MyInvocation.MyCommand.ScriptBlock.ToString()
    ConvertTo-Json -InputObject @{ Path = $path }
    return
}
try {
    $files = @()
    if ($From -eq 0) {
        Copy-Item -LiteralPath $E -Destination $T
        $files += Split-Path -Leaf $E
    }
    New-Item -ItemType Directory -Path "$T\logs" -Force | Out-Null
    foreach ($log in (Get-ChildItem -LiteralPath $L -Filter "$P*.log")) {
        $current = $log.BaseName -eq $P
        if ($current -or [Convert]::ToInt64($log.BaseName.Substring($P.Length), 16) -gt $From) {
            Copy-Item -LiteralPath $log.FullName -Destination "$T\logs"
            $files += "logs/$($log.Name)"
        }
    }
    $ml = (& eseutil.exe /ml "$L\$P.log" | Out-String)
    $current = [int64]([regex]::Match($ml, 'lGeneration:\s*(\d+)')).Groups[1].Value
    ConvertTo-Json -InputObject @{ Files = $files; Current = $current } |
        Set-Content -LiteralPath "$T\dobaas.ready" -Encoding UTF8
} catch {
    Set-Content -LiteralPath "$T\dobaas.failed" -Value "$_"
    exit 1
}
$end = (Get-Date).AddMinutes($Wait)
while ((Get-Date) -lt $end) {
    if (Test-Path -LiteralPath "$T\dobaas.published") { exit 0 }
    if ((Test-Path -LiteralPath "$T\dobaas.abort") -or -not (Test-Path -LiteralPath $T)) { exit 1 }
    Start-Sleep -Seconds 5
}
exit 1
