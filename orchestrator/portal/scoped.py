"""One row of a tenant's table with its history, as a user may see it: the query every request and ticket lookup
makes, so the tenant filter is written once."""

from __future__ import annotations

from sqlalchemy import Column, Engine, Table, select

from orchestrator.errors import NotFound
from orchestrator.portal.accounts import User


def row_with_events(engine: Engine, user: User, table: Table, key: Column, value: object, events: Table,
                    link: Column, missing: str) -> tuple[dict, list[dict]]:
    """(row, its events oldest first). Another tenant's row is NotFound(``missing``), exactly as one that does
    not exist."""
    q = select(table).where(key == value)
    if not user.staff:
        q = q.where(table.c.tenant == user.tenant)
    with engine.connect() as conn:
        row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFound(missing)
        found = [dict(e) for e in conn.execute(select(events).where(link == row["id"])
                                               .order_by(events.c.id)).mappings()]
    return dict(row), found
