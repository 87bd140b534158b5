"""Standard Webhooks signatures (https://www.standardwebhooks.com), for outbound webhooks.

The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`; the signature is
`v1,` and the base64 of its HMAC-SHA256 under the secret's bytes. Secrets are written
`whsec_<base64 of 32 random bytes>`. Receivers verify with the public `standardwebhooks`
libraries; several signatures (during a secret's rotation) are separated by spaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret, `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook signing secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The `v1,<base64>` signature of one delivery."""
    content = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secrets_in_use: tuple[str, ...], message_id: str, timestamp: int, body: str
) -> str:
    """The `webhook-signature` header: one signature per secret in use, space-separated
    (the current secret and, during a rotation's overlap, the previous one)."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_in_use)
