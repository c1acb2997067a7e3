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

# The address rule does not use the `ipaddress` module's is_global/is_private flags: their tables differ between
# Python versions (3.11 counted fec0::/10, 192.0.0.9 and 192.0.0.192 as public). The blocks are written out here,
# transcribed from IANA's "IPv4 Special-Purpose Address Registry" (iana-ipv4-special-registry) and "IPv6
# Special-Purpose Address Registry" (iana-ipv6-special-registry) as of 2025 (newest entries: IPv4 192.88.99.2/32,
# RFC 6751; IPv6 100:0:0:1::/64, RFC 9780). Every listed block is refused, including those the registry marks
# globally reachable (anycast relays, AS112, AMT): none of them is a customer's mail server.
# When the registries change, add the new rows here (and to tests/test_netguard.py).
IPV4_SPECIAL_PURPOSE_REGISTRY: tuple[tuple[str, str, str], ...] = (
    ("0.0.0.0/8", '"This network"', "RFC 791, Section 3.2"),
    ("0.0.0.0/32", '"This host on this network"', "RFC 1122, Section 3.2.1.3"),
    ("10.0.0.0/8", "Private-Use", "RFC 1918"),
    ("100.64.0.0/10", "Shared Address Space", "RFC 6598"),
    ("127.0.0.0/8", "Loopback", "RFC 1122, Section 3.2.1.3"),
    ("169.254.0.0/16", "Link Local", "RFC 3927"),
    ("172.16.0.0/12", "Private-Use", "RFC 1918"),
    ("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890, Section 2.1"),
    ("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335"),
    ("192.0.0.8/32", "IPv4 dummy address", "RFC 7600"),
    ("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723"),
    ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    ("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050"),
    ("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050"),
    ("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737"),
    ("192.31.196.0/24", "AS112-v4", "RFC 7535"),
    ("192.52.193.0/24", "AMT", "RFC 7450"),
    ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526"),
    ("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751"),
    ("192.168.0.0/16", "Private-Use", "RFC 1918"),
    ("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534"),
    ("198.18.0.0/15", "Benchmarking", "RFC 2544"),
    ("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737"),
    ("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737"),
    ("240.0.0.0/4", "Reserved", "RFC 1112, Section 4"),
    ("255.255.255.255/32", "Limited Broadcast", "RFC 8190, RFC 919, Section 7"),
)
# Not unicast at all (IANA "IPv4 Address Space Registry": Multicast).
IPV4_MULTICAST = ("224.0.0.0/4", "Multicast", "RFC 5771")

IPV6_SPECIAL_PURPOSE_REGISTRY: tuple[tuple[str, str, str], ...] = (
    ("::1/128", "Loopback Address", "RFC 4291"),
    ("::/128", "Unspecified Address", "RFC 4291"),
    ("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291"),
    ("64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052"),
    ("64:ff9b:1::/48", "IPv4-IPv6 Translat.", "RFC 8215"),
    ("100::/64", "Discard-Only Address Block", "RFC 6666"),
    ("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780"),
    ("2001::/23", "IETF Protocol Assignments", "RFC 2928"),
    ("2001::/32", "TEREDO", "RFC 4380, RFC 8190"),
    ("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723"),
    ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155"),
    ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast Address", "RFC 9665"),
    ("2001:2::/48", "Benchmarking", "RFC 5180, RFC Errata 1752"),
    ("2001:3::/32", "AMT", "RFC 7450"),
    ("2001:4:112::/48", "AS112-v6", "RFC 7535"),
    ("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843"),
    ("2001:20::/28", "ORCHIDv2", "RFC 7343"),
    ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374"),
    ("2001:db8::/32", "Documentation", "RFC 3849"),
    ("2002::/16", "6to4", "RFC 3056"),
    ("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534"),
    ("3fff::/20", "Documentation", "RFC 9637"),
    ("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602"),
    ("fc00::/7", "Unique-Local", "RFC 4193, RFC 8190"),
    ("fe80::/10", "Link-Local Unicast", "RFC 4291"),
)
# IANA "IPv6 Address Space": only this block is Global Unicast (site-local fec0::/10, multicast ff00::/8 and the
# unassigned rest are outside it).
IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

IPV4_REFUSED: tuple[ipaddress.IPv4Network, ...] = tuple(
    ipaddress.IPv4Network(block) for block, _, _ in (*IPV4_SPECIAL_PURPOSE_REGISTRY, IPV4_MULTICAST)
)
IPV6_REFUSED: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(block) for block, _, _ in IPV6_SPECIAL_PURPOSE_REGISTRY
)
# IPv6 addresses that stand for an IPv4 address (as the getaddrinfo of a dual-stack or DNS64 host may return them):
# judged as the IPv4 address they carry. Other tunnels (6to4, Teredo) are special-purpose blocks and refused.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


class HostRefused(Exception):
    """The bot will not connect to this host/port; `.diagnosis` says why in words a user can act on."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.text)
        self.diagnosis = diagnosis


def is_public_address(address: str) -> bool:
    """True only for a global unicast address: IPv4 outside every special-purpose block and multicast; IPv6 inside
    2000::/3 and outside every special-purpose block. IPv4-mapped and NAT64 addresses are judged by their IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _IPV4_MAPPED or ip in _NAT64_WELL_KNOWN:
            return is_public_address(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
        return ip in IPV6_GLOBAL_UNICAST and not any(ip in block for block in IPV6_REFUSED)
    return not any(ip in block for block in IPV4_REFUSED)


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
