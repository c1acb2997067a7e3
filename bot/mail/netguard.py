"""SSRF guard for customer SMTP hosts.

A customer types any host and port into a form, and the bot connects to it from inside our network. Without a guard
that is a port scanner and a way into internal services. So: resolve the name ourselves, refuse if any address is
not public, allow only the usual mail ports, and return the checked address so the caller connects to exactly it
(DNS cannot change between the check and the connection).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from bot.mail.diagnosis import Diagnosis, host_not_found, invalid_host, port_not_allowed, private_host

log = logging.getLogger(__name__)

MAIL_PORTS: tuple[int, ...] = (25, 465, 587, 2525)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class HostRefused(Exception):
    """The bot will not connect to this host/port; `.diagnosis` says why in words a user can act on."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.text)
        self.diagnosis = diagnosis


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address tunnels to (mapped, 6to4, Teredo, NAT64), if any."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def is_public_address(address: str) -> bool:
    """True only for a global unicast address; IPv4 hidden inside IPv6 is checked as IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public_address(str(inner))
    # is_global alone lets some multicast and reserved ranges through (e.g. 224.0.1.1).
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_unspecified
        and not ip.is_private
    )


def is_loopback(host: str) -> bool:
    """Whether a listen or connect address is this machine ("localhost" or a loopback IP)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _normalize(host: str) -> str:
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name or len(name) > 253 or any(c.isspace() or ord(c) < 32 or c in "/@?#\\" for c in name):
        raise HostRefused(invalid_host(host))
    return name


async def resolve_mail_addresses(
    host: str, port: int, *, allow_private: bool, allowed_ports: tuple[int, ...]
) -> list[str]:
    """Every address `host` resolves to, in the resolver's order of preference, all checked; or HostRefused.

    Refuses ports outside `allowed_ports` and hosts where ANY resolved address is not public (so a name that returns
    one public and one internal address cannot be used to reach the internal one). `allow_private` lifts both
    checks: tests and the demo use loopback servers on free ports."""
    if not 0 < port < 65536 or (not allow_private and port not in allowed_ports):
        raise HostRefused(port_not_allowed(port, allowed_ports))
    name = _normalize(host)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        log.info("mail host %r did not resolve: %s", name, type(exc).__name__)
        raise HostRefused(host_not_found(host)) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise HostRefused(host_not_found(host))
    if not allow_private:
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            log.warning("refused mail host %r port %d: non-public address(es) %s", name, port, ", ".join(blocked))
            raise HostRefused(private_host(host))
    return addresses


async def resolve_mail_host(host: str, port: int, *, allow_private: bool, allowed_ports: tuple[int, ...]) -> str:
    """The (checked) address to connect to: the first of `resolve_mail_addresses`; HostRefused if any is refused."""
    addresses = await resolve_mail_addresses(host, port, allow_private=allow_private, allowed_ports=allowed_ports)
    return addresses[0]
