"""Alerts: conditions evaluated after runs (and by the daemon over time), sent once per condition until it
clears, by webhook (JSON POST) and e-mail (SMTP)."""
