<#
.SYNOPSIS
    Turns the backup's checkpoint into an RCT reference point once every byte of it is stored (the
    differencing disks merge back; only the change-tracking reference remains).
.PARAMETER VmId
    The VM's Id (GUID).
.PARAMETER CheckpointId
    The checkpoint New-DobaasCheckpoint took.
.OUTPUTS
    JSON object: ReferencePointId, Disks (Path and RctId of each virtual disk at that point).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$VmId,
    [Parameter(Mandatory)][string]$CheckpointId
)
$ErrorActionPreference = 'Stop'
$ns = 'root\virtualization\v2'
$snap = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSettingData |
    Where-Object { $_.ConfigurationID -eq $CheckpointId }
if (-not $snap) { throw "checkpoint $CheckpointId of VM $VmId not found" }
$svc = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSnapshotService
$r = Invoke-CimMethod -InputObject $svc -MethodName ConvertToReferencePoint -Arguments @{ AffectedSnapshot = $snap }
if ($r.ReturnValue -ne 0 -and $r.ReturnValue -ne 4096) { throw "ConvertToReferencePoint returned $($r.ReturnValue)" }
$rp = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemReferencePoint |
    Where-Object { $_.VirtualSystemIdentifier -eq $VmId } | Sort-Object -Property InstanceID | Select-Object -Last 1
$disks = @(for ($i = 0; $i -lt $rp.VirtualDiskIdentifiers.Count; $i++) {
    $sasd = Get-CimInstance -Namespace $ns -ClassName Msvm_StorageAllocationSettingData |
        Where-Object { $_.InstanceID -eq $rp.VirtualDiskIdentifiers[$i] }
    [pscustomobject]@{ Path = $sasd.HostResource[0]; RctId = $rp.ResilientChangeTrackingIdentifiers[$i] } })
ConvertTo-Json -Depth 4 -Compress -InputObject ([pscustomobject]@{ ReferencePointId = $rp.InstanceID; Disks = $disks })
