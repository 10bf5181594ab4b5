"""Where completion notifications may be sent: the allow-list, and no private or loopback address
unless the operator allowed it (a webhook URL must not become a way into the internal network)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from hubtune.settings import Settings


class DestinationRefused(ValueError):
    pass


def check_url(url: str, settings: Settings, *, resolve: bool) -> str:
    """The URL's host name when `url` may be notified, else DestinationRefused saying why.

    `resolve=False` checks what the URL itself says (at job creation); `resolve=True` also checks every
    address the name resolves to (right before sending).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused(f"webhook_url {url!r} must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise DestinationRefused("webhook_url must not carry credentials")
    host = parts.hostname.lower().rstrip(".")
    allowed_hosts = [h.lower() for h in settings.webhook_allowed_host_list]
    if allowed_hosts and not any(_host_matches(host, pattern) for pattern in allowed_hosts):
        raise DestinationRefused(f"webhook_url host '{host}' is not in the allowed hosts of this server")
    addresses = _literal(host)
    if addresses is None and (host in ("localhost", "localhost.localdomain") or host.endswith(".localhost")):
        addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    if addresses is None and resolve:
        addresses = _resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    for address in addresses or []:
        if _private(address) and not _allowed_private(address, settings):
            raise DestinationRefused(
                f"webhook_url host '{host}' is a private or loopback address ({address}); "
                "the server's HUBTUNE_WEBHOOK_ALLOWED_PRIVATE setting does not allow it"
            )
    return host


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _literal(host: str) -> list | None:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        return None


def _resolve(host: str, port: int) -> list:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise DestinationRefused(f"webhook_url host '{host}' does not resolve: {exc}") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def _private(address) -> bool:
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
            or address.is_multicast or address.is_unspecified)


def _allowed_private(address, settings: Settings) -> bool:
    for entry in settings.webhook_allowed_private_list:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False
