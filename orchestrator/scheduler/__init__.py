"""The scheduler daemon: policies run on their cron schedules, for years, without anyone typing a command."""
