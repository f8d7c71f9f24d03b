"""Policy files: YAML that says what to back up, where, when and for how long."""
