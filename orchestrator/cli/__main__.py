"""`python -m orchestrator.cli …`: the `dobaas` command, for processes started by the portal."""

from orchestrator.cli.main import main

main()
