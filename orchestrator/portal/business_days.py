"""French business days (Monday to Friday, not a public holiday), for the incident report's deadline: the
contract gives 20 business days after closure. Public holidays come from the `holidays` package."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import holidays

PARIS = ZoneInfo("Europe/Paris")


@cache
def _french(year: int, subdiv: str | None) -> frozenset[date]:
    return frozenset(holidays.France(years=year, subdiv=subdiv))


def is_business_day(d: date, subdiv: str | None = None) -> bool:
    return d.weekday() < 5 and d not in _french(d.year, subdiv)


def add_business_days(start: date, n: int, subdiv: str | None = None) -> date:
    """The ``n``-th business day after ``start`` (``start`` itself never counts)."""
    d = start
    while n > 0:
        d += timedelta(days=1)
        if is_business_day(d, subdiv):
            n -= 1
    return d


def deadline_after(moment: datetime, n: int, subdiv: str | None = None) -> datetime:
    """The end (midnight, Paris time) of the ``n``-th business day after the Paris day of ``moment``."""
    day = add_business_days(moment.astimezone(PARIS).date(), n, subdiv)
    return datetime.combine(day + timedelta(days=1), time(0), PARIS)
