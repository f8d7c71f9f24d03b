"""Discovery against a real Oracle Database, for whoever has one: outside the default run (tests/real is not
collected by plain `pytest`), run with ``DOBAAS_ORACLE_DSN=user/password@host:port/service pytest tests/real -m
oracle_real``; without the variable it fails loudly rather than skip."""

from __future__ import annotations

import os

import pytest


@pytest.mark.oracle_real
def test_discovery_against_a_real_oracle() -> None:
    """Opt-in (-m oracle_real) with DOBAAS_ORACLE_DSN=user/password@host:port/service: the plugin's statements
    run as written against a real database."""
    from plugins.oracle import discovery

    dsn = os.environ.get("DOBAAS_ORACLE_DSN")
    assert dsn, "set DOBAAS_ORACLE_DSN=user/password@host:port/service to run the real-Oracle contract test"
    creds, _, where = dsn.rpartition("@")
    user, _, password = creds.partition("/")
    conn = discovery.connect(where, user, password)
    info = discovery.describe(conn)
    assert info.dbid > 0 and info.log_mode in ("ARCHIVELOG", "NOARCHIVELOG")
    assert discovery.query(conn, discovery.CURRENT_SCN)[0][0] > 0
