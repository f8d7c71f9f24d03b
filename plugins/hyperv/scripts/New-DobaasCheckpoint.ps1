<#
.SYNOPSIS
    Takes the production checkpoint a Do'BaaS backup reads from (VSS in the guest).
.PARAMETER VmId
    The VM's Id (GUID).
.PARAMETER Lineage
    Names the checkpoint "dobaas-<Lineage>": one backup chain (vault and snapshot name) never touches another's.
.PARAMETER AllowCrashConsistent
    When the guest cannot quiesce (no integration services, VSS failure), take a crash-consistent checkpoint
    instead of failing. Without it, a production-only checkpoint is required.
.OUTPUTS
    JSON object: CheckpointId, Name, Consistency ("application" or "crash"), RemovedStale (names of checkpoints
    of this lineage left by an interrupted backup, removed first), Disks (Path of the frozen virtual disk read
    by the backup, ControllerType, ControllerNumber, ControllerLocation, Size).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$VmId,
    [Parameter(Mandatory)][string]$Lineage,
    [bool]$AllowCrashConsistent
)
$ErrorActionPreference = 'Stop'
$vm = Get-VM -Id $VmId
$name = "dobaas-$Lineage"
$stale = @(Get-VMSnapshot -VM $vm | Where-Object { $_.Name -eq $name })
foreach ($s in $stale) { Remove-VMSnapshot -VMSnapshot $s }
$consistency = 'application'
try {
    Set-VM -VM $vm -CheckpointType ProductionOnly
    $cp = Checkpoint-VM -VM $vm -SnapshotName $name -Passthru
} catch {
    if (-not $AllowCrashConsistent) { throw "production checkpoint failed (guest could not quiesce): $_" }
    Set-VM -VM $vm -CheckpointType Standard
    $cp = Checkpoint-VM -VM $vm -SnapshotName $name -Passthru
    $consistency = 'crash'
}
$disks = @(foreach ($d in $cp.HardDrives) {
    [pscustomobject]@{ Path = $d.Path; ControllerType = $d.ControllerType.ToString()
        ControllerNumber = $d.ControllerNumber; ControllerLocation = $d.ControllerLocation
        Size = (Get-VHD -Path $d.Path).Size } })
ConvertTo-Json -Depth 5 -Compress -InputObject ([pscustomobject]@{
    CheckpointId = $cp.Id.ToString(); Name = $name; Consistency = $consistency
    RemovedStale = @($stale | ForEach-Object { $_.Name }); Disks = $disks })
