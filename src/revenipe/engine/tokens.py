"""Customer tokens: proof, signed by an app's backend, that a client acts for one customer.

Format: ``rvt1.<payload>.<signature>``; the payload is base64url JSON
``{"app": app id, "cus": internal customer id, "exp": unix seconds}`` and the
signature is base64url HMAC-SHA256 over ``rvt1.<payload>`` with the app's signing
secret. Pure functions: the caller supplies the secret and `now`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

TOKEN_PREFIX = "rvt1"
MAX_TOKEN_LENGTH = 1024


class TokenProblem(StrEnum):
    """Why a customer token is refused (the code a refused request carries)."""

    MALFORMED = "token_malformed"
    BAD_SIGNATURE = "token_bad_signature"
    EXPIRED = "token_expired"
    WRONG_APP = "token_wrong_app"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a token says: the app, the internal customer id, and when it expires
    (signed as whole Unix seconds)."""

    app_id: str
    customer_id: str
    expires_at: datetime


class InvalidToken(Exception):
    """A token that proves nothing; `problem` says why, `message` says it to a person."""

    def __init__(self, problem: TokenProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, signed: str) -> str:
    return _b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())


def sign_token(secret: str, claims: TokenClaims) -> str:
    """The token for `claims`, signed with the app's signing `secret` (HMAC-SHA256;
    the format is in the module's docstring). `expires_at` is cut to whole seconds."""
    payload = _b64(
        json.dumps(
            {
                "app": claims.app_id,
                "cus": claims.customer_id,
                "exp": int(claims.expires_at.timestamp()),
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
    )
    signed = f"{TOKEN_PREFIX}.{payload}"
    return f"{signed}.{_signature(secret, signed)}"


def read_unverified_app(token: str) -> str | None:
    """The app a token claims to be for (to find its secret); None if unreadable."""
    try:
        return str(_decode_payload(token)["app"])
    except (InvalidToken, KeyError):
        return None


def _decode_payload(token: str) -> dict[str, object]:
    parts = token.split(".") if isinstance(token, str) and token.isascii() else []
    if len(token) > MAX_TOKEN_LENGTH or len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise InvalidToken(TokenProblem.MALFORMED, "the customer token is malformed")
    try:
        payload = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken(TokenProblem.MALFORMED, "the customer token is malformed") from None
    if not isinstance(payload, dict):
        raise InvalidToken(TokenProblem.MALFORMED, "the customer token is malformed")
    return payload


def verify_token(secret: str, token: str, *, app_id: str, now: datetime) -> TokenClaims:
    """The claims of a token signed with `secret` for `app_id` and not expired at `now`."""
    payload = _decode_payload(token)
    signed, _, signature = token.rpartition(".")
    if not hmac.compare_digest(_signature(secret, signed), signature):
        raise InvalidToken(
            TokenProblem.BAD_SIGNATURE, "the customer token's signature is not valid for this app"
        )
    app, customer, expires = payload.get("app"), payload.get("cus"), payload.get("exp")
    if (
        not isinstance(app, str)
        or not isinstance(customer, str)
        or not isinstance(expires, int)
        or isinstance(expires, bool)
    ):
        raise InvalidToken(TokenProblem.MALFORMED, "the customer token is malformed")
    if app != app_id:
        raise InvalidToken(TokenProblem.WRONG_APP, "the customer token is for another app")
    expires_at = datetime.fromtimestamp(expires, UTC)
    if now >= expires_at:
        raise InvalidToken(
            TokenProblem.EXPIRED, "the customer token has expired; mint a new one from your backend"
        )
    return TokenClaims(app, customer, expires_at)
