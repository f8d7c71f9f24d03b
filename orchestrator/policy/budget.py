"""The client contract's daily change budget [6.05]: changed data per day, as a fraction of the initially saved
volume, above which the subscription is re-priced. Alerts, `dobaas stats` and the monthly report measure
against this one figure (a policy's alerts may set their own threshold)."""

DAILY_CHANGE_BUDGET = 0.002
