"""DNS lookups for the checks: dnspython's async resolver pointed at DNS_RESOLVER (or the system's), with a short
timeout; TXT records joined as verifiers join them, CNAME chains followed, failures turned into `Unknown`."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from bot.mail.domain_checks.results import Unknown

DEFAULT_TIMEOUT = 3.0


def parse_resolver(spec: str | None) -> tuple[str, int] | None:
    """DNS_RESOLVER: "1.2.3.4:5353", "[::1]:5353", "1.2.3.4" or "::1" (port 53). None/"" means the system's.
    Raises ValueError (a configuration error, never an "unknown")."""
    if not spec or not spec.strip():
        return None
    spec = spec.strip()
    host, port = spec, 53
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"can't read {spec!r}; use host:port, [ipv6]:port or an IP address")
            port = _port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = _port(p, spec)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (a resolver is given by address)") from None
    return host, port


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {spec!r}")
    return int(text)


def _configure(resolver: dns.resolver.BaseResolver, server: tuple[str, int] | None, timeout: float) -> None:
    if server is not None:
        # A Nameserver object carries its own port.
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*server)]
    resolver.lifetime = timeout  # the whole resolve() call, retries and TCP fallback included
    resolver.timeout = min(timeout, 1.0)  # one attempt; UDP is retried within the lifetime


def async_resolver(server: tuple[str, int] | None, timeout: float = DEFAULT_TIMEOUT) -> dns.asyncresolver.Resolver:
    # configure=True reads /etc/resolv.conf (and fails without one); not needed when the server is given.
    resolver = dns.asyncresolver.Resolver(configure=server is None)
    _configure(resolver, server, timeout)
    return resolver


def sync_resolver(server: tuple[str, int] | None, timeout: float = DEFAULT_TIMEOUT) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=server is None)
    _configure(resolver, server, timeout)
    return resolver


def resolvers(
    server: tuple[str, int] | None, timeout: float
) -> tuple[dns.asyncresolver.Resolver, dns.resolver.Resolver] | None:
    """Both resolvers, or None when the system has no resolver configuration (then every check is unknown)."""
    try:
        return async_resolver(server, timeout), sync_resolver(server, timeout)
    except dns.resolver.NoResolverConfiguration:
        return None


@dataclass(frozen=True)
class Txt:
    """TXT lookup result: `records` are the TXT records (each one's strings joined); `exists` False for NXDOMAIN;
    `target` is where a CNAME chain ended when the name was an alias."""

    records: list[str]
    exists: bool
    target: str | None = None


async def txt(resolver: dns.asyncresolver.Resolver, name: str) -> Txt:
    qname = dns.name.from_text(name)
    try:
        answer = await resolver.resolve(qname, "TXT", search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as exc:
        end = exc.canonical_name
        return Txt([], False, end.to_text(omit_final_dot=True).lower() if end != qname else None)
    except dns.resolver.NoNameservers as exc:  # every server answered SERVFAIL/REFUSED or garbage
        raise Unknown("the DNS server could not answer (SERVFAIL)") from exc
    except dns.exception.Timeout as exc:
        raise Unknown("the DNS server did not answer in time") from exc
    except dns.exception.DNSException as exc:  # NoResolverConfiguration, YXDOMAIN, ...
        raise Unknown(f"DNS lookup failed ({type(exc).__name__})") from exc
    target = answer.canonical_name.to_text(omit_final_dot=True).lower() if answer.canonical_name != qname else None
    # TXT records arrive as several <=255-byte strings, joined with nothing in between.
    records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset] if answer.rrset else []
    return Txt(records, True, target)


async def addresses(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """A and AAAA of a host (an IP literal is returned as is). Raises Unknown when the server fails."""
    host = host.strip().strip("[]").rstrip(".")
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass

    async def one(rdtype: str) -> list[str]:
        try:
            answer = await resolver.resolve(host, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as exc:
            raise Unknown(f"looking up {host} failed ({type(exc).__name__})") from exc
        return [r.address for r in answer.rrset] if answer.rrset else []

    v4, v6 = await asyncio.gather(one("A"), one("AAAA"))
    return v4 + v6


def tags(record: str) -> dict[str, str]:
    """tag=value pairs of a DMARC or DKIM record."""
    found = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            found[key.strip().lower()] = value.strip()
    return found
