"""Reports for clients: the monthly report of what was protected, how well, and against what the contract
promises."""
