"""What every route of the portal works with: the catalog, the accounts, the requests and tickets, the tenants'
policies, and the clock (injected by tests: the contract's clocks are checked at chosen instants)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from orchestrator.catalog.db import Catalog
from orchestrator.portal.accounts import Accounts, User
from orchestrator.portal.incidents import Incidents
from orchestrator.portal.restore_requests import RestoreRequests
from orchestrator.portal.tenants import Tenants


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Portal:
    catalog: Catalog
    tenants: Tenants
    #: cookies marked Secure (the default: the portal is served over HTTPS by the provider's front end)
    secure_cookies: bool = True
    clock: Callable[[], datetime] = _utc_now
    accounts: Accounts = field(init=False)
    requests: RestoreRequests = field(init=False)
    incidents: Incidents = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = Accounts(self.catalog.engine)
        self.requests = RestoreRequests(self.catalog.engine)
        self.incidents = Incidents(self.catalog.engine)

    def now(self) -> datetime:
        return self.clock()

    def scope(self, user: User, asked: str | None = None) -> str | None:
        """The tenant a user's queries are limited to: a client's own, whatever it asks; for technicians and
        administrators the tenant they ask for, or None (all)."""
        return (asked or None) if user.staff else user.tenant
