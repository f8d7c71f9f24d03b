"""Connecting to MySQL/MariaDB with errors a technician can act on (server down, credentials, privileges)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrator.plugin.errors import BadInput, DobaasError


@dataclass
class Endpoint:
    host: str = "127.0.0.1"
    port: int = 3306
    socket: str | None = None
    user: str = "root"
    password: str | None = None

    def describe(self) -> str:
        return self.socket or f"{self.host}:{self.port}"

    def client_args(self) -> list[str]:
        """Arguments for the mariadb/mariadb-binlog clients (the password goes in MYSQL_PWD, never argv)."""
        args = ["--no-defaults", f"--user={self.user}"]
        args += [f"--socket={self.socket}"] if self.socket else [f"--host={self.host}", f"--port={self.port}"]
        return args

    def client_env(self) -> dict[str, str]:
        return {"MYSQL_PWD": self.password} if self.password else {}


def connector() -> Any:
    try:
        import mysql.connector
    except ImportError:
        raise BadInput("the mysql plugin needs mysql-connector-python (pip install 'dobaas[mysql]')") from None
    return mysql.connector


def explain(e: Exception, ep: Endpoint) -> DobaasError:
    """One sentence for a connector error: what is wrong and where."""
    errno = getattr(e, "errno", None)
    msg = getattr(e, "msg", None) or str(e)
    if errno in (2002, 2003, 2005, 2006, 2013, 2055):
        return DobaasError(f"MySQL server at {ep.describe()} is not reachable ({msg})")
    if errno == 1045:
        return DobaasError(f"MySQL server at {ep.describe()} refused user {ep.user!r}: wrong password or user")
    if errno in (1044, 1142, 1143, 1227, 1370, 1235) or (errno and "privilege" in msg.lower()):
        m = re.search(r"need (?:\(at least one of\) )?the ([A-Z ,]+?) privilege", msg)
        what = f"the {m.group(1).strip()} privilege" if m else "a privilege"
        return DobaasError(f"user {ep.user!r} on {ep.describe()} lacks {what}: {msg}")
    if errno == 1049:
        return DobaasError(f"MySQL server at {ep.describe()}: {msg}")
    return DobaasError(f"MySQL server at {ep.describe()}: {msg}")


def connect(ep: Endpoint, **kw: Any) -> Any:
    mc = connector()
    args: dict[str, Any] = {"user": ep.user, "password": ep.password or "", "connection_timeout": 10,
                            "autocommit": False, **kw}
    if ep.socket:
        args["unix_socket"] = ep.socket
    else:
        args.update(host=ep.host, port=ep.port)
    try:
        return mc.connect(**args)
    except mc.Error as e:
        raise explain(e, ep) from None


def server_variable(ep: Endpoint, name: str) -> str:
    conn = connect(ep)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT @@{name}")
        return str(cur.fetchall()[0][0])
    except connector().Error as e:
        raise explain(e, ep) from None
    finally:
        conn.close()
