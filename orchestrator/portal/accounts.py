"""Portal accounts: Argon2id password hashes, one-time default passwords that must be changed before anything
else, lockout after repeated failures, sessions whose tokens are stored only as hashes, and the audit log."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, and_, delete, insert, select, update

from orchestrator.catalog.portal_tables import audit, sessions, users
from orchestrator.errors import BadInput, UsageError

ROLES = ("client", "technician", "admin")
MAX_FAILURES = 5  # failed logins in a row before the account is locked
LOCK_MINUTES = 15
SESSION_HOURS = 8
MIN_PASSWORD = 12

#: Argon2id with RFC 9106's second recommended profile (64 MiB, 3 passes), the library's default
_hasher = PasswordHasher()
#: verified when a login is unknown, so an unknown login costs the same time as a wrong password
_DUMMY = _hasher.hash("dobaas-no-such-user")


class LoginRefused(Exception):
    """Wrong login or password, or a locked account: the message is safe to show."""


@dataclass(frozen=True)
class User:
    id: int
    login: str
    tenant: str
    role: str
    must_change: bool

    @property
    def staff(self) -> bool:
        """Technicians and administrators see every tenant."""
        return self.role in ("technician", "admin")


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def iso(t: datetime) -> str:
    return t.isoformat()


class Accounts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, login: str, tenant: str, role: str, now: datetime) -> str:
        """Create an account with a one-time default password (returned; only its hash is kept)."""
        if role not in ROLES:
            raise UsageError(f"--role must be one of {', '.join(ROLES)}")
        if role == "client" and not tenant:
            raise UsageError("a client account needs --tenant (the client name of its policies)")
        if not login or len(login) > 100 or not login.isprintable():
            raise UsageError("--login: 1 to 100 printable characters")
        password = secrets.token_urlsafe(12)
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.id).where(users.c.login == login)).first():
                raise UsageError(f"the login {login!r} exists already")
            conn.execute(insert(users).values(login=login, tenant=tenant if role == "client" else "", role=role,
                                              password_hash=_hasher.hash(password), must_change=True, failures=0,
                                              locked_until="", created=iso(now)))
        return password

    def authenticate(self, login: str, password: str, now: datetime) -> User:
        """The user, or LoginRefused. A locked account is refused even with the right password."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.login == login)).mappings().first()
        if row is None:
            _verify(_DUMMY, password)
            raise LoginRefused("wrong login or password")
        if row["locked_until"] and row["locked_until"] > iso(now):
            raise LoginRefused(f"this account is locked after {MAX_FAILURES} failed logins; try again after "
                               f"{row['locked_until'][:16].replace('T', ' ')} UTC")
        good = _verify(row["password_hash"], password)
        with self.engine.begin() as conn:  # committed before any refusal is raised
            if good:
                conn.execute(update(users).where(users.c.id == row["id"]).values(failures=0, locked_until=""))
                return _user(row)
            failures = conn.execute(select(users.c.failures).where(users.c.id == row["id"])).scalar_one() + 1
            locked = iso(now + timedelta(minutes=LOCK_MINUTES)) if failures >= MAX_FAILURES else ""
            conn.execute(update(users).where(users.c.id == row["id"])
                         .values(failures=0 if locked else failures, locked_until=locked))
        raise LoginRefused("wrong login or password" + (
            f"; the account is now locked for {LOCK_MINUTES} minutes" if locked else ""))

    def change_password(self, user: User, old: str, new: str) -> None:
        """Replace the password (the old one proves it is the user); every session of the user ends."""
        if len(new) < MIN_PASSWORD:
            raise BadInput(f"the new password needs at least {MIN_PASSWORD} characters")
        if new == old:
            raise BadInput("the new password must differ from the current one")
        with self.engine.begin() as conn:
            current = conn.execute(select(users.c.password_hash).where(users.c.id == user.id)).scalar()
            if current is None or not _verify(current, old):
                raise BadInput("the current password is wrong")
            conn.execute(update(users).where(users.c.id == user.id)
                         .values(password_hash=_hasher.hash(new), must_change=False))
            conn.execute(delete(sessions).where(sessions.c.user_id == user.id))

    # ---- sessions ----------------------------------------------------------------------------------------
    def open_session(self, user: User, kind: str, now: datetime) -> tuple[str, str]:
        """A new session (never one the browser brought: no fixation). Returns (token, csrf token)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.expires < iso(now)))
            conn.execute(insert(sessions).values(token_hash=_hash_token(token), user_id=user.id, kind=kind, csrf=csrf,
                                                 created=iso(now),
                                                 expires=iso(now + timedelta(hours=SESSION_HOURS))))
        return token, csrf

    def session(self, token: str, kind: str, now: datetime) -> tuple[User, str] | None:
        """(user, csrf token) of a live session of this kind, or None."""
        q = (select(users, sessions.c.csrf).join(sessions, sessions.c.user_id == users.c.id)
             .where(and_(sessions.c.token_hash == _hash_token(token), sessions.c.kind == kind,
                         sessions.c.expires > iso(now))))
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return (_user(row), row["csrf"]) if row else None

    def close_session(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.token_hash == _hash_token(token)))

    # ---- audit -------------------------------------------------------------------------------------------
    def record(self, now: datetime, login: str, tenant: str, action: str, detail: str = "",
               address: str = "") -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(audit).values(time=iso(now), login=login, tenant=tenant, action=action,
                                              detail=detail[:4000], address=address))

    def audit_log(self, tenant: str | None = None, limit: int = 500) -> list[dict]:
        q = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if tenant is not None:
            q = q.where(audit.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]


def _verify(phc: str, password: str) -> bool:
    try:
        return _hasher.verify(phc, password)
    except (VerificationError, InvalidHashError):
        return False


def _user(row) -> User:
    return User(id=row["id"], login=row["login"], tenant=row["tenant"], role=row["role"],
                must_change=bool(row["must_change"]))
