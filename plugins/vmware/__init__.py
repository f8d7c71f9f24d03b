"""VMware ESXi / vCenter source plugin (pyvmomi, changed-block tracking, datastore HTTP reads)."""
