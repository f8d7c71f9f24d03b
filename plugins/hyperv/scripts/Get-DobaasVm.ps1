<#
.SYNOPSIS
    Describes Hyper-V virtual machines for Do'BaaS: identity, state, configuration and virtual disks.
.PARAMETER Name
    Names of the VMs (wildcards allowed). All VMs of the host when omitted.
.OUTPUTS
    JSON array: Name, Id, Generation, State, ProcessorCount, MemoryStartupBytes, DynamicMemory,
    SecureBoot, Version, NetworkAdapters (Name, SwitchName, MacAddress), Disks (ControllerType,
    ControllerNumber, ControllerLocation, Path, VhdType, Size, ParentPath).
.NOTES
    Read only. Needs membership of "Hyper-V Administrators".
#>
[CmdletBinding()]
param(
    [string[]]$Name
)
$ErrorActionPreference = 'Stop'
$vms = if ($Name) { Get-VM -Name $Name } else { Get-VM }
$out = @(foreach ($vm in $vms) {
    $secure = $false
    if ($vm.Generation -eq 2) { $secure = (Get-VMFirmware -VM $vm).SecureBoot -eq 'On' }
    [pscustomobject]@{
        Name               = $vm.Name
        Id                 = $vm.Id.ToString()
        Generation         = $vm.Generation
        State              = $vm.State.ToString()
        ProcessorCount     = $vm.ProcessorCount
        MemoryStartupBytes = $vm.MemoryStartup
        DynamicMemory      = $vm.DynamicMemoryEnabled
        SecureBoot         = $secure
        Version            = $vm.Version
        NetworkAdapters    = @(foreach ($n in (Get-VMNetworkAdapter -VM $vm)) {
            [pscustomobject]@{ Name = $n.Name; SwitchName = $n.SwitchName; MacAddress = $n.MacAddress } })
        Disks              = @(foreach ($d in (Get-VMHardDiskDrive -VM $vm)) {
            $vhd = Get-VHD -Path $d.Path
            [pscustomobject]@{
                ControllerType = $d.ControllerType.ToString(); ControllerNumber = $d.ControllerNumber
                ControllerLocation = $d.ControllerLocation; Path = $d.Path; VhdType = $vhd.VhdType.ToString()
                Size = $vhd.Size; ParentPath = $vhd.ParentPath } })
    }
})
ConvertTo-Json -InputObject $out -Depth 6 -Compress
