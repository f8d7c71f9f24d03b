<#
.SYNOPSIS
    Checks a restore target before any byte is written: the VM name is free, the directory's volume has room.
.PARAMETER Name
    The new VM's name.
.PARAMETER Directory
    Where the restored virtual disks will be written.
.OUTPUTS
    JSON object: NameTaken, DirectoryExists, FreeBytes.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][string]$Name,
    [Parameter(Mandatory)][string]$Directory
)
$ErrorActionPreference = 'Stop'
$taken = [bool](Get-VM -Name $Name -ErrorAction SilentlyContinue)
$exists = Test-Path -LiteralPath $Directory -PathType Container
$drive = (Get-Item -LiteralPath ([System.IO.Path]::GetPathRoot($Directory))).PSDrive
ConvertTo-Json -Compress -InputObject ([pscustomobject]@{ NameTaken = $taken; DirectoryExists = $exists
    FreeBytes = $drive.Free })
