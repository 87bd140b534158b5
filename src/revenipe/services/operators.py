"""Operators of the dashboard: accounts, password and one-time-link sign-in, sessions,
and the limit on failed sign-ins (docs/adr/0020).

Operators are server-wide: a signed-in operator sees every app of the server. Secrets
are never stored as such: passwords as argon2id hashes (memory-hard: a stolen table is
slow to guess from), session and link tokens as SHA-256 hashes (256 random bits each:
nothing to guess, a plain hash suffices).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.services.context import ServiceContext, new_id
from revenipe.storage import operator_sessions as session_store
from revenipe.storage import operators as operator_store
from revenipe.storage import sign_in_failures as failure_store
from revenipe.storage import sign_in_links as link_store
from revenipe.storage.operators import OperatorRow

SESSION_TTL = timedelta(hours=12)
"""A session ends this long after sign-in, used or not: an operator signs in once a
working day."""
LINK_TTL_SECONDS = 600
MAX_LINK_TTL_SECONDS = 7 * 24 * 3600
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_EMAIL = 5
"""Failed sign-ins for one email in a window before its sign-ins are refused (429)."""
MAX_FAILURES_PER_ADDRESS = 20
"""Failed sign-ins from one client address in a window: higher than per email, since
several operators may share an address (an office's NAT)."""
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

_hasher = PasswordHasher()  # argon2id, the library's defaults (RFC 9106's second choice)


class SignInRefused(Exception):
    """A sign-in that did not succeed: wrong credentials, or too many failures lately
    (`retry_after_seconds` set: the caller answers 429 with Retry-After)."""

    def __init__(self, message: str, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    """For the cookie; only its hash is stored."""
    csrf_token: str
    operator: OperatorRow
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SignedIn:
    operator: OperatorRow
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedLink:
    token: str
    """For the URL; only its hash is stored."""
    operator_email: str | None
    """None: a set-up link (no operator yet): using it creates the first operator."""
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LinkView:
    operator_email: str | None
    expires_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def normalize_email(email: object) -> str:
    if not isinstance(email, str):
        raise RevenipeError(ErrorCode.INVALID_ARGUMENT, "email must be a string", field="email")
    normalized = email.strip().lower()
    if len(normalized) > 320 or not _EMAIL.match(normalized):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT, "email must look like name@example.com", field="email"
        )
    return normalized


def check_password(password: object) -> str:
    if not isinstance(password, str) or not (
        MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
    ):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            field="password",
        )
    return password


def check_time_zone(name: object) -> str:
    if isinstance(name, str) and 0 < len(name) <= 64 and name in _time_zones():
        return name
    raise RevenipeError(
        ErrorCode.INVALID_ARGUMENT,
        "time zone must be an IANA name such as UTC or Europe/Paris",
        field="time_zone",
    )


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


def time_zone_names() -> list[str]:
    return sorted(_time_zones())


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def create_operator(
    ctx: ServiceContext, email: str, password: str, *, time_zone: str = "UTC"
) -> OperatorRow:
    row = _new_operator(ctx, email, password, time_zone)
    with ctx.db.write() as conn:
        if not operator_store.insert_operator_if_new(conn, row):
            raise RevenipeError(
                ErrorCode.INVALID_ARGUMENT, f"an operator {row.email} exists", field="email"
            )
    return row


def _new_operator(ctx: ServiceContext, email: str, password: str, time_zone: str) -> OperatorRow:
    return OperatorRow(
        id=new_id("op"),
        email=normalize_email(email),
        password_hash=_hasher.hash(check_password(password)),
        time_zone=check_time_zone(time_zone),
        created_at=ctx.now(),
    )


def list_operators(ctx: ServiceContext) -> list[OperatorRow]:
    with ctx.db.read() as conn:
        return operator_store.list_operators(conn)


def has_operators(ctx: ServiceContext) -> bool:
    with ctx.db.read() as conn:
        return operator_store.any_operator(conn)


def set_time_zone(ctx: ServiceContext, operator_id: str, time_zone: str) -> None:
    checked = check_time_zone(time_zone)
    with ctx.db.write() as conn:
        operator_store.update_time_zone(conn, operator_id, checked)


# -- one-time links --------------------------------------------------------------------


def create_sign_in_link(
    ctx: ServiceContext, email: str | None = None, *, ttl_seconds: int = LINK_TTL_SECONDS
) -> IssuedLink:
    """A one-time link for the operator `email`; without one, for the only operator, or
    a set-up link when there is none yet."""
    if not isinstance(ttl_seconds, int) or not 60 <= ttl_seconds <= MAX_LINK_TTL_SECONDS:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"a link lives from 60 to {MAX_LINK_TTL_SECONDS} seconds",
            field="ttl",
        )
    now = ctx.now()
    token = secrets.token_urlsafe(32)
    with ctx.db.write() as conn:
        operator = _link_operator(conn, email)
        link_store.insert_link(
            conn,
            link_store.SignInLinkRow(
                token_hash=token_hash(token),
                operator_id=operator.id if operator else None,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_seconds),
                used_at=None,
            ),
        )
    return IssuedLink(
        token, operator.email if operator else None, now + timedelta(seconds=ttl_seconds)
    )


def _link_operator(conn: Connection, email: str | None) -> OperatorRow | None:
    if email is not None:
        found = operator_store.find_by_email(conn, normalize_email(email))
        if found is None:
            raise RevenipeError(ErrorCode.INVALID_ARGUMENT, f"no operator {email!r}", field="email")
        return found
    everyone = operator_store.list_operators(conn)
    if len(everyone) > 1:
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            "this server has several operators: name one with --email",
            field="email",
        )
    return everyone[0] if everyone else None


def inspect_link(ctx: ServiceContext, token: str) -> LinkView | None:
    """What a link would do, or None if it is unknown, used or expired."""
    now = ctx.now()
    with ctx.db.read() as conn:
        link = link_store.get_link(conn, token_hash(token))
        if link is None or link.used_at is not None or link.expires_at <= now:
            return None
        if link.operator_id is None:
            return LinkView(None, link.expires_at)
        operator = operator_store.get_operator(conn, link.operator_id)
        if operator is None:
            return None
        return LinkView(operator.email, link.expires_at)


def sign_in_with_link(
    ctx: ServiceContext,
    token: str,
    *,
    email: str | None = None,
    password: str | None = None,
    time_zone: str = "UTC",
) -> NewSession:
    """Use a one-time link (once: a second use is refused, even racing the first). A
    set-up link needs the new operator's `email` and `password`."""
    now = ctx.now()
    new_operator: OperatorRow | None = None
    with ctx.db.read() as conn:
        link = link_store.get_link(conn, token_hash(token))
    if link is not None and link.operator_id is None:
        new_operator = _new_operator(ctx, email or "", password or "", time_zone)
    with ctx.db.write() as conn:
        if link is None or not link_store.use_link(conn, token_hash(token), now):
            raise SignInRefused("this sign-in link is unknown, used or expired")
        if new_operator is not None:
            if not operator_store.insert_operator_if_new(conn, new_operator):
                raise RevenipeError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"an operator {new_operator.email} exists",
                    field="email",
                )
            operator: OperatorRow | None = new_operator
        else:
            operator = operator_store.get_operator(conn, link.operator_id or "")
        if operator is None:
            raise SignInRefused("this sign-in link is unknown, used or expired")
        return _open_session(conn, operator, now)


# -- passwords, and the limit on failures ------------------------------------------------


def sign_in_with_password(
    ctx: ServiceContext, email: object, password: object, client_address: str
) -> NewSession:
    """Check the password; refuse (SignInRefused) on a wrong one, and with a retry
    time while the email or the client address has had too many failures lately.

    The limit is counted in the database, so it holds across processes and servers; a
    burst of concurrent guesses may pass the check together and overshoot it by as
    many as arrive at once (each still costs an argon2 verification)."""
    now = ctx.now()
    subjects = [(f"address:{client_address[:300]}", MAX_FAILURES_PER_ADDRESS)]
    normalized = email.strip().lower()[:320] if isinstance(email, str) else ""
    if normalized:
        subjects.append((f"email:{normalized}", MAX_FAILURES_PER_EMAIL))
    with ctx.db.read() as conn:
        wait = max(_wait_for(conn, subject, limit, now) for subject, limit in subjects)
        operator = operator_store.find_by_email(conn, normalized) if normalized else None
    if wait > 0:
        raise SignInRefused("too many failed sign-ins; try again later", wait)
    if not _password_matches(operator, password):
        with ctx.db.write() as conn:
            for subject, _ in subjects:
                failure_store.forget_failures(conn, subject, now - FAILURE_WINDOW)
                failure_store.insert_failure(conn, subject, now)
        raise SignInRefused("wrong email or password")
    if operator is None:  # for mypy: a match needs an operator
        raise SignInRefused("wrong email or password")
    with ctx.db.write() as conn:
        if _hasher.check_needs_rehash(operator.password_hash) and isinstance(password, str):
            operator_store.update_password_hash(conn, operator.id, _hasher.hash(password))
        return _open_session(conn, operator, now)


def _wait_for(conn: Connection, subject: str, limit: int, now: datetime) -> int:
    """Seconds until the subject may try again (0: now)."""
    recent = failure_store.failures_since(conn, subject, now - FAILURE_WINDOW, limit)
    if len(recent) < limit:
        return 0
    free_at = recent[0] + FAILURE_WINDOW
    return max(1, int((free_at - now).total_seconds()) + 1)


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _password_matches(operator: OperatorRow | None, password: object) -> bool:
    """Verify against the operator's hash, or a decoy when there is no such operator,
    so that a wrong email takes as long as a wrong password."""
    if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSWORD_LENGTH:
        return False
    try:
        return (
            _hasher.verify(operator.password_hash if operator else _decoy_hash(), password)
            and operator is not None
        )
    except (VerificationError, InvalidHashError):
        return False


# -- sessions --------------------------------------------------------------------------


def _open_session(conn: Connection, operator: OperatorRow, now: datetime) -> NewSession:
    token = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    expires_at = now + SESSION_TTL
    session_store.delete_ended_sessions(conn, operator.id, now)
    session_store.insert_session(
        conn,
        session_store.OperatorSessionRow(
            token_hash=token_hash(token),
            operator_id=operator.id,
            csrf_token=csrf_token,
            created_at=now,
            expires_at=expires_at,
        ),
    )
    return NewSession(token, csrf_token, operator, expires_at)


def signed_in(ctx: ServiceContext, token: str) -> SignedIn | None:
    """The operator a session token signs in, or None (unknown, signed out, expired)."""
    if not token or len(token) > 200:
        return None
    now = ctx.now()
    with ctx.db.read() as conn:
        session = session_store.get_session(conn, token_hash(token))
        if session is None or session.expires_at <= now:
            return None
        operator = operator_store.get_operator(conn, session.operator_id)
    if operator is None:
        return None
    return SignedIn(operator, session.csrf_token, session.expires_at)


def sign_out(ctx: ServiceContext, token: str) -> None:
    with ctx.db.write() as conn:
        session_store.delete_session(conn, token_hash(token))
