"""Minting and checking customer tokens for an app (see engine/tokens.py for the format)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.tokens import TokenClaims, sign_token, verify_token
from revenipe.services.context import ServiceContext
from revenipe.services.customers import ensure_customer
from revenipe.storage import apps as app_store

DEFAULT_TOKEN_TTL_SECONDS = 3600
MAX_TOKEN_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class MintedToken:
    token: str
    customer_id: str
    expires_at: datetime


def mint_customer_token(
    ctx: ServiceContext, app_id: str, external_id: str, ttl_seconds: int | None = None
) -> MintedToken:
    """A token for one customer of one app (created, with defaults, if new)."""
    ttl = DEFAULT_TOKEN_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not (1 <= ttl <= MAX_TOKEN_TTL_SECONDS):
        raise RevenipeError(
            ErrorCode.INVALID_ARGUMENT,
            f"ttl_seconds must be an integer from 1 to {MAX_TOKEN_TTL_SECONDS}",
            field="ttl_seconds",
        )
    customer = ensure_customer(ctx, app_id, external_id)
    with ctx.db.read() as conn:
        app = ctx.require_app(conn, app_id)
    return issue_token(app, customer.id, ctx.now() + timedelta(seconds=ttl))


def issue_token(app: app_store.AppRow, customer_id: str, expires_at: datetime) -> MintedToken:
    """Sign a token for an already known customer (expiry rounded up to a whole second)."""
    if expires_at.microsecond:
        expires_at = expires_at.replace(microsecond=0) + timedelta(seconds=1)
    token = sign_token(app.token_signing_secret, TokenClaims(app.id, customer_id, expires_at))
    return MintedToken(token, customer_id, expires_at)


def check_customer_token(app: app_store.AppRow, token: str, now: datetime) -> TokenClaims:
    """Raise `engine.tokens.InvalidToken` unless `token` is valid for `app` at `now`."""
    return verify_token(app.token_signing_secret, token, app_id=app.id, now=now)
