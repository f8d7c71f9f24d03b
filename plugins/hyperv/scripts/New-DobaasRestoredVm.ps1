<#
.SYNOPSIS
    Creates a new VM from a Do'BaaS snapshot's saved configuration, on disks already restored to the host.
.PARAMETER Name
    The new VM's name (must not exist).
.PARAMETER Generation
    1 or 2, as the original.
.PARAMETER ProcessorCount
    Virtual processors.
.PARAMETER MemoryStartupBytes
    Startup memory in bytes.
.PARAMETER SecureBoot
    Generation 2: Secure Boot on or off.
.PARAMETER DiskPaths
    The restored virtual disks, in the original controller order (the first is the boot disk).
.PARAMETER Switches
    For each network adapter of the original, the virtual switch it was connected to.
.PARAMETER Connect
    Connect the adapters to those switches (default: adapters created disconnected).
.PARAMETER Start
    Start the VM and wait until Hyper-V reports it running.
.OUTPUTS
    JSON object: Id, Name, State.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$Name,
    [Parameter(Mandatory)][int]$Generation,
    [Parameter(Mandatory)][int]$ProcessorCount,
    [Parameter(Mandatory)][long]$MemoryStartupBytes,
    [bool]$SecureBoot,
    [Parameter(Mandatory)][string[]]$DiskPaths,
    [string[]]$Switches,
    [bool]$Connect,
    [bool]$Start
)
$ErrorActionPreference = 'Stop'
if (Get-VM -Name $Name -ErrorAction SilentlyContinue) { throw "a VM named $Name already exists" }
$vm = New-VM -Name $Name -Generation $Generation -MemoryStartupBytes $MemoryStartupBytes -NoVHD
try {
    Set-VMProcessor -VM $vm -Count $ProcessorCount
    if ($Generation -eq 2) { Set-VMFirmware -VM $vm -EnableSecureBoot ($(if ($SecureBoot) { 'On' } else { 'Off' })) }
    foreach ($p in $DiskPaths) { Add-VMHardDiskDrive -VM $vm -Path $p }
    Get-VMNetworkAdapter -VM $vm | Remove-VMNetworkAdapter
    foreach ($s in @($Switches)) {
        if ($Connect -and $s) { Add-VMNetworkAdapter -VM $vm -SwitchName $s } else { Add-VMNetworkAdapter -VM $vm }
    }
    if ($Start) {
        Start-VM -VM $vm
        $deadline = (Get-Date).AddMinutes(5)
        while ((Get-VM -Id $vm.Id).State -ne 'Running') {
            if ((Get-Date) -gt $deadline) { throw "$Name did not reach Running within 5 minutes" }
            Start-Sleep -Seconds 2
        }
    }
} catch {
    Remove-VM -VM $vm -Force
    throw
}
$vm = Get-VM -Id $vm.Id
ConvertTo-Json -Depth 3 -Compress -InputObject ([pscustomobject]@{ Id = $vm.Id.ToString(); Name = $vm.Name
    State = $vm.State.ToString() })
