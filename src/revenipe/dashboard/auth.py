"""Who is signed in, and whether a form really comes from our own page.

- The session cookie holds a random token (its SHA-256 is what the database keeps):
  HttpOnly (no script reads it), SameSite=Lax (not sent on cross-site form posts),
  Secure when the request came over https, scoped to the dashboard's path.
- Every state-changing request is a POST carrying the session's CSRF token in a hidden
  field, compared in constant time; a request whose Origin header names another site
  is refused as well. Sign-in forms, before any session exists, carry a token that
  must equal a cookie set with the form (double submit).
- Flash messages ride a short-lived cookie from an action to the page it redirects to.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from revenipe.dashboard.rendering import PREFIX
from revenipe.services import operators as operator_service
from revenipe.services.context import ServiceContext
from revenipe.services.operators import NewSession, SignedIn

SESSION_COOKIE = "revenipe_session"
SIGN_IN_COOKIE = "revenipe_sign_in"
FLASH_COOKIE = "revenipe_flash"
CSRF_FIELD = "csrf_token"


class SignInRequired(Exception):
    """No valid session: the answer is a redirect to the sign-in page."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


class CsrfRefused(Exception):
    """A state-changing request without our page's token (403)."""


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str
    """"ok" or "error"."""
    text: str


def session_token(request: Request) -> str:
    return request.cookies.get(SESSION_COOKIE, "")


def require_operator(ctx: ServiceContext, request: Request) -> SignedIn:
    """The signed-in operator, or SignInRequired (read once per request)."""
    cached = getattr(request.state, "signed_in", None)
    if isinstance(cached, SignedIn):
        return cached
    signed = operator_service.signed_in(ctx, session_token(request))
    if signed is None:
        back_to = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(back_to if request.method == "GET" else PREFIX + "/")
    request.state.signed_in = signed
    return signed


def require_csrf(ctx: ServiceContext, request: Request, submitted: str) -> SignedIn:
    """The signed-in operator of a state-changing request whose form carries the
    session's CSRF token; CsrfRefused otherwise."""
    signed = require_operator(ctx, request)
    _check_origin(request)
    if not submitted or not hmac.compare_digest(submitted.encode(), signed.csrf_token.encode()):
        raise CsrfRefused
    return signed


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:  # older browsers, and same-origin GETs: the token decides
        return
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise CsrfRefused


def new_sign_in_token(request: Request, response: Response) -> str:
    """The token a sign-in form carries, set as a cookie too (reused if present)."""
    token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(24)
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    return token


def check_sign_in_csrf(request: Request, submitted: str) -> None:
    _check_origin(request)
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if (
        not expected
        or not submitted
        or not hmac.compare_digest(submitted.encode(), expected.encode())
    ):
        raise CsrfRefused


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(
    request: Request, response: Response, session: NewSession, now: datetime
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=max(1, int((session.expires_at - now).total_seconds())),
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=_https(request),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=PREFIX, httponly=True, samesite="lax", secure=_https(request)
    )


def redirect(url: str, *, flash: str | None = None, error: bool = False) -> RedirectResponse:
    """303 to `url` (a GET), carrying a message for the page it lands on."""
    response = RedirectResponse(url, 303)
    if flash:
        payload = json.dumps({"kind": "error" if error else "ok", "text": flash[:500]})
        value = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        response.set_cookie(
            FLASH_COOKIE, value, max_age=60, path=PREFIX, httponly=True, samesite="lax"
        )
    return response


def read_flash(request: Request) -> Flash | None:
    value = request.cookies.get(FLASH_COOKIE)
    if not value or len(value) > 2000:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        kind, text = payload["kind"], payload["text"]
    except (ValueError, KeyError, TypeError):
        return None
    if kind not in ("ok", "error") or not isinstance(text, str):
        return None
    return Flash(kind, text)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
        and all(ord(c) > 31 for c in value)
    ):
        return value
    return PREFIX + "/"
