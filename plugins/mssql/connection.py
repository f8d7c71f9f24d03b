"""A pymssql connection with SQL Server's errors turned into one sentence each (server down, login failed 18456,
permission missing, database offline), and SQL text helpers (identifiers and strings quoted as T-SQL quotes
them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.plugin.errors import DobaasError, NotFound, WrongPassphrase

#: error number -> what to tell the technician
HINTS = {
    262: "the login lacks the permission: grant it db_backupoperator in the database (or BACKUP DATABASE and "
         "BACKUP LOG)",
    3201: "SQL Server cannot write or read the file on the share: the SQL Server service account needs read/write "
          "access to the share",
    942: "the database is offline",
    3202: "the share's disk is full: free space there (the backup file is removed; nothing was published)",
    3013: "the backup stopped before its end (nothing was published; the partial file is removed)",
    911: "no such database",
}


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str


class SqlError(DobaasError):
    """A statement SQL Server refused: its number and message."""

    def __init__(self, number: int, message: str, statement: str) -> None:
        hint = HINTS.get(number)
        super().__init__(f"SQL Server error {number}: {message}" + (f" — {hint}" if hint else ""))
        self.number, self.message, self.statement = number, message, statement


def quote_name(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def quote_str(text: str) -> str:
    return "N'" + text.replace("'", "''") + "'"


class Connection:
    def __init__(self, server: Server) -> None:
        import pymssql

        self.server = server
        try:
            self.conn = pymssql.connect(server=server.host, port=str(server.port), user=server.user,
                                        password=server.password, login_timeout=15, timeout=0, autocommit=True)
        except pymssql.OperationalError as e:
            number, message = _parts(e)
            text = str(e.args)
            if "Unable to connect" in text or "Connection refused" in text:  # FreeTDS may keep an older message
                raise DobaasError(f"{server.host}:{server.port}: SQL Server unreachable (connection refused or no "
                                  "answer: is the server running, is TCP enabled on that port?)") from None
            if number == 18456:
                raise WrongPassphrase(f"{server.host}:{server.port}: login failed for {server.user} (18456): check the "
                                      "login and its password") from None
            raise DobaasError(f"{server.host}:{server.port}: SQL Server unreachable ({message})") from None

    def rows(self, sql: str) -> list[tuple]:
        return self._run(sql, fetch=True)

    def execute(self, sql: str) -> None:
        self._run(sql, fetch=False)

    def _run(self, sql: str, fetch: bool) -> list[tuple]:
        import pymssql

        cur = self.conn.cursor()
        try:
            cur.execute(sql)
            return list(cur.fetchall()) if fetch else []
        except pymssql.Error as e:
            number, message = _parts(e)
            if number == 3013 and "3202" in str(e.args):  # the cause comes first: say it
                number = 3202
            if number == 911:
                raise NotFound(message) from None
            raise SqlError(number, message, sql) from None
        finally:
            cur.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


def _parts(e: Any) -> tuple[int, str]:
    args: tuple = tuple(getattr(e, "args", ()))
    if len(args) == 1 and isinstance(args[0], tuple):  # a connect error: ((number, message),)
        args = args[0]
    if len(args) >= 2 and isinstance(args[0], int):
        text = args[1].decode("utf-8", "replace") if isinstance(args[1], bytes) else str(args[1])
        return args[0], text.split("DB-Lib error message")[0].strip()
    return 0, str(e).split("DB-Lib error message")[0].strip()
