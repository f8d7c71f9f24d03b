# The WinRM HTTPS listener dobaas connects to: a server-auth certificate for this host (the one the role imported,
# else a self-signed one), no Basic authentication, no unencrypted traffic. Idempotent: $Ansible.Changed only
# when something was changed. Outputs the certificate's SHA-256 fingerprint (what a policy's `thumbprint:` pins).
[CmdletBinding()]
param([int]$Port = 5986)
$ErrorActionPreference = 'Stop'
$fqdn = [System.Net.Dns]::GetHostEntry([string]$env:COMPUTERNAME).HostName
$Ansible.Changed = $false
$cert = Get-ChildItem Cert:\LocalMachine\My |
    Where-Object { $_.Subject -eq "CN=$fqdn" -and $_.NotAfter -gt (Get-Date).AddDays(30) -and $_.HasPrivateKey } |
    Sort-Object NotAfter -Descending | Select-Object -First 1
if (-not $cert) {
    $cert = New-SelfSignedCertificate -DnsName $fqdn -CertStoreLocation Cert:\LocalMachine\My -KeyExportPolicy NonExportable -NotAfter (Get-Date).AddYears(5)
    $Ansible.Changed = $true
}
$listener = Get-ChildItem WSMan:\localhost\Listener | Where-Object { $_.Keys -contains 'Transport=HTTPS' }
$current = $null
if ($listener) {
    $current = (Get-ChildItem "WSMan:\localhost\Listener\$($listener.Name)" | Where-Object { $_.Name -eq 'CertificateThumbprint' }).Value
}
if ($current -ne $cert.Thumbprint) {
    if ($listener) { Remove-Item "WSMan:\localhost\Listener\$($listener.Name)" -Recurse -Force }
    New-Item -Path WSMan:\localhost\Listener -Transport HTTPS -Address * -CertificateThumbPrint $cert.Thumbprint -Port $Port -Force | Out-Null
    $Ansible.Changed = $true
}
foreach ($setting in @(@{ Path = 'WSMan:\localhost\Service\Auth\Basic'; Value = 'false' },
                       @{ Path = 'WSMan:\localhost\Service\AllowUnencrypted'; Value = 'false' })) {
    if ((Get-Item $setting.Path).Value -ne $setting.Value) {
        Set-Item -Path $setting.Path -Value $setting.Value
        $Ansible.Changed = $true
    }
}
$sha = [System.Security.Cryptography.SHA256]::Create()
[pscustomobject]@{
    thumbprint = $cert.Thumbprint
    sha256     = ([System.BitConverter]::ToString($sha.ComputeHash($cert.RawData)) -replace '-', '').ToLowerInvariant()
    port       = $Port
}
