<#
.SYNOPSIS
    Removes a backup checkpoint that will not become a reference point (the backup failed or was stopped), or
    an older reference point of the same chain once a newer snapshot is published.
.PARAMETER VmId
    The VM's Id (GUID).
.PARAMETER CheckpointId
    A checkpoint to remove (its differencing disks merge back).
.PARAMETER ReferencePointId
    A reference point to remove.
.OUTPUTS
    JSON object: Removed (what was removed).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$VmId,
    [string]$CheckpointId,
    [string]$ReferencePointId
)
$ErrorActionPreference = 'Stop'
$removed = @()
if ($CheckpointId) {
    $cp = Get-VMSnapshot -VM (Get-VM -Id $VmId) | Where-Object { $_.Id.ToString() -eq $CheckpointId }
    if ($cp) { Remove-VMSnapshot -VMSnapshot $cp; $removed += $CheckpointId }
}
if ($ReferencePointId) {
    $ns = 'root\virtualization\v2'
    $rp = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemReferencePoint |
        Where-Object { $_.InstanceID -eq $ReferencePointId }
    if ($rp) {
        $svc = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemReferencePointService
        $r = Invoke-CimMethod -InputObject $svc -MethodName DestroyReferencePoint -Arguments @{ AffectedReferencePoint = $rp }
        if ($r.ReturnValue -ne 0 -and $r.ReturnValue -ne 4096) { throw "DestroyReferencePoint returned $($r.ReturnValue)" }
        $removed += $ReferencePointId
    }
}
ConvertTo-Json -Depth 3 -Compress -InputObject ([pscustomobject]@{ Removed = @($removed) })
