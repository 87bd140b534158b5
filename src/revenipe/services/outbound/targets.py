"""Which URLs an endpoint may point at: https (unless allowed otherwise), and never an
address on loopback, private, link-local (cloud metadata), multicast or reserved ranges,
unless private targets are allowed (`--allow-private-webhooks`). Checked when an
endpoint is saved and again when each delivery is sent (DNS may have changed meanwhile);
the delivery then connects to the very address checked."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from revenipe.engine.errors import ErrorCode, RevenipeError

MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    allow_private: bool = False
    """Loopback and private addresses allowed (tests, local development)."""
    require_https: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str
    """The checked IP address to connect to."""


def _refuse(message: str) -> RevenipeError:
    return RevenipeError(ErrorCode.UNSAFE_WEBHOOK_URL, message, field="url")


def check_url(url: object, policy: TargetPolicy) -> tuple[str, str, int]:
    """(scheme, host, port) of a well-formed endpoint URL, or `unsafe_webhook_url`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise _refuse(f"url must be an absolute http(s) URL of at most {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise _refuse("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise _refuse("url must start with https://")
    if scheme == "http" and policy.require_https:
        raise _refuse("url must be https (plain http only with --allow-private-webhooks)")
    if not parts.hostname:
        raise _refuse("url has no host")
    if parts.username is not None or parts.password is not None:
        raise _refuse("url must not carry credentials")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(url: object, policy: TargetPolicy) -> Target:
    """Check the URL and resolve its host; every address it resolves to must be allowed
    (a name with one private address among public ones is refused)."""
    scheme, host, port = check_url(url, policy)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _refuse("url's host does not resolve") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise _refuse("url's host does not resolve")
    if not policy.allow_private:
        for address in addresses:
            if not is_public(address):
                raise _refuse(
                    "url resolves to a loopback, private, link-local or reserved address "
                    "(allowed only with --allow-private-webhooks)"
                )
    return Target(scheme, host, port, addresses[0])
