"""Where webhooks may go: public addresses only.

A token holder chooses a subscriber's URL, and the delivery worker POSTs to it from inside the
deployment, beside the database and Redis. A URL whose host is (or resolves to) a loopback,
private, link-local or otherwise non-public address is refused when the subscriber is saved and
again before every delivery. ``WEBHOOK_ALLOW_PRIVATE=1`` allows them, for receivers on the
internal network (and the tests' local receiver).
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class Refused(ValueError):
    pass


def check_url(url: str) -> None:
    """Raise Refused when ``url`` may not receive webhooks."""
    try:
        parts = urlsplit(url)
        port = parts.port  # checked here: out of 0-65535 is a ValueError
    except ValueError:  # an unclosed [IPv6 address, a port out of range
        raise Refused(f"{url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"{url!r} is not an http(s) URL")
    if port == 0:
        raise Refused(f"{url!r} names port 0, where nothing listens")
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        found = {info[4][0] for info in socket.getaddrinfo(parts.hostname, port or 443)}
    except (socket.gaierror, UnicodeError):
        raise Refused(f"the host {parts.hostname!r} does not resolve") from None
    for address in found:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise Refused(f"{parts.hostname!r} is not a public address (set "
                          f"WEBHOOK_ALLOW_PRIVATE=1 for receivers on an internal network)")
