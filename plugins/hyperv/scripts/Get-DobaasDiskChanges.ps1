<#
.SYNOPSIS
    Lists the byte ranges of a virtual disk written since a Resilient Change Tracking reference
    (Msvm_ImageManagementService.GetVirtualDiskChanges, called until the whole disk is processed).
.PARAMETER Path
    The virtual disk file, as the host sees it.
.PARAMETER RctId
    The RCT id recorded by the previous backup's reference point for this disk.
.PARAMETER Size
    The disk's virtual size in bytes.
.OUTPUTS
    JSON object: Ranges (array of [offset, length]). Fails when the reference is no longer valid (disk replaced,
    VM moved, RCT reset): the backup then reads the whole disk.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$Path,
    [Parameter(Mandatory)][string]$RctId,
    [Parameter(Mandatory)][long]$Size
)
$ErrorActionPreference = 'Stop'
$svc = Get-CimInstance -Namespace root\virtualization\v2 -ClassName Msvm_ImageManagementService
$ranges = New-Object System.Collections.ArrayList
$offset = 0
while ($offset -lt $Size) {
    $r = Invoke-CimMethod -InputObject $svc -MethodName GetVirtualDiskChanges -Arguments @{
        Path = $Path; LimitId = $RctId; TargetSnapshotId = $null; ByteOffset = [uint64]$offset
        ByteLength = [uint64]($Size - $offset) }
    if ($r.ReturnValue -ne 0) { throw "GetVirtualDiskChanges returned $($r.ReturnValue) for $Path (reference $RctId)" }
    for ($i = 0; $i -lt $r.ChangedByteOffsets.Count; $i++) {
        [void]$ranges.Add(@($r.ChangedByteOffsets[$i], $r.ChangedByteLengths[$i])) }
    if ($r.ProcessedByteLength -le 0) { throw "GetVirtualDiskChanges made no progress on $Path" }
    $offset += $r.ProcessedByteLength
}
ConvertTo-Json -Depth 4 -Compress -InputObject ([pscustomobject]@{ Ranges = @($ranges) })
