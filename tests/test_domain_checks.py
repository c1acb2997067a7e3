"""The DNS client kit of the health checks (bot/mail/domain_checks) against a real DNS server on loopback
(tests/fake_dns.py, dnslib), over real UDP and TCP.

Addresses in zone data are from the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32): they are only data in answers, nothing ever connects to them."""

from __future__ import annotations

import asyncio

import pytest

from bot.mail import dkim
from bot.mail.domain_checks import (
    GOOGLE_SELECTORS,
    MICROSOFT_SELECTORS,
    CheckResult,
    Status,
    check_domain,
    parse_resolver,
)
from tests.fake_dns import FakeDNS, Zone, dns_server_fixture  # noqa: F401

DOMAIN = "example.com"
HOST = "smtp.example.com"
HOST_IP = "192.0.2.10"
SELECTOR = dkim.DEFAULT_SELECTOR


@pytest.fixture(scope="module")
def our_key() -> bytes:
    return dkim.generate_key()


@pytest.fixture(scope="module")
def other_key() -> bytes:
    return dkim.generate_key()


def good_zone(zone: Zone, key: bytes) -> None:
    zone.add(DOMAIN, "TXT", "v=spf1 ip4:192.0.2.0/28 -all")
    zone.add(DOMAIN, "TXT", "google-site-verification=abc")  # other TXT records at the apex are ignored
    zone.add(HOST, "A", HOST_IP)
    zone.add(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}")
    zone.add(f"google._domainkey.{DOMAIN}", "TXT", dkim.public_record(key))


async def check(server: FakeDNS, hosts: list[str] = [HOST], **kw: object) -> dict[str, CheckResult]:  # noqa: B006
    kw.setdefault("dkim_selectors", GOOGLE_SELECTORS)
    results = await check_domain(DOMAIN, sending_hosts=hosts, resolver=server.server, **kw)  # type: ignore[arg-type]
    found = {r.check: r for r in results}
    assert len(found) == len(results), results
    return found


async def test_all_good(dns_server: FakeDNS, our_key: bytes) -> None:
    good_zone(dns_server.zone, our_key)
    results = await check(dns_server)
    assert {c: r.status for c, r in results.items()} == {"spf": "ok", "dmarc": "ok", "dkim": "ok"}
    assert all(r.fix is None for r in results.values())
    assert results["spf"].details == (f"{HOST_IP}: pass",)


async def test_missing_dmarc_and_p_none(dns_server: FakeDNS, our_key: bytes) -> None:
    good_zone(dns_server.zone, our_key)
    dns_server.zone.remove(f"_dmarc.{DOMAIN}")
    dmarc = (await check(dns_server))["dmarc"]
    assert dmarc.status is Status.PROBLEM and "no DMARC record" in dmarc.message
    assert dmarc.fix == '_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.com"'
    assert [q[0] for q in dns_server.zone.queries if q[0].startswith("_dmarc")] == ["_dmarc.example.com"], "no TLD"

    dns_server.zone.add(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=none; rua=mailto:reports@{DOMAIN}")
    dmarc = (await check(dns_server))["dmarc"]
    assert dmarc.status is Status.WARNING and "p=quarantine" in dmarc.message
    assert dmarc.fix == '_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:reports@example.com"'


async def test_a_subdomain_inherits_its_parents_dmarc(dns_server: FakeDNS) -> None:
    dns_server.zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; sp=none")
    [_spf, dmarc] = await check_domain("mail.example.com", resolver=dns_server.server)
    assert dmarc.status is Status.WARNING and "parent domain's record applies" in dmarc.message


async def test_spf_missing_or_not_listing_the_sending_host(dns_server: FakeDNS) -> None:
    z = dns_server.zone
    z.add(HOST, "A", HOST_IP)
    z.add(DOMAIN, "MX", f"10 {HOST}")  # the domain exists, just no SPF
    spf = (await check(dns_server, dkim_selectors=()))["spf"]
    assert spf.status is Status.PROBLEM and "no SPF record" in spf.message
    assert spf.fix == 'example.com. 3600 IN TXT "v=spf1 a:smtp.example.com ~all"'

    z.add(DOMAIN, "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    spf = (await check(dns_server, dkim_selectors=()))["spf"]
    assert spf.status is Status.PROBLEM and "does not list smtp.example.com" in spf.message
    assert spf.fix == 'example.com. 3600 IN TXT "v=spf1 a:smtp.example.com ip4:198.51.100.0/24 -all"'

    z.set(DOMAIN, "TXT", "v=spf1 ip4:198.51.100.0/24 ~all")
    assert (await check(dns_server, dkim_selectors=()))["spf"].status is Status.WARNING


async def test_spf_through_includes_and_the_providers_include(dns_server: FakeDNS) -> None:
    z = dns_server.zone
    z.add(DOMAIN, "TXT", "v=spf1 include:_spf.example.net include:spf.protection.outlook.com -all")
    z.add("_spf.example.net", "TXT", "v=spf1 redirect=_netblocks.example.org")
    z.add("_netblocks.example.org", "TXT", "v=spf1 ip4:198.51.100.0/24 a:out.example.org -all")
    z.add("spf.protection.outlook.com", "TXT", "v=spf1 ip4:203.0.113.0/28 -all")
    z.add("out.example.org", "A", "203.0.113.77")
    z.add("relay.example.net", "A", "198.51.100.25")  # ip4 through include -> redirect
    z.add("relay2.example.net", "A", "203.0.113.77")  # a: inside the chain
    z.add("smtp.office365.com", "A", "203.0.113.200")  # a submission host outside the provider's outbound ranges
    hosts = ["relay.example.net", "relay2.example.net", "smtp.office365.com", "203.0.113.99"]
    results = await check_domain(DOMAIN, sending_hosts=hosts, resolver=dns_server.server)
    spf = [r for r in results if r.check == "spf"]
    assert [(r.subject, r.status) for r in spf] == [
        ("relay.example.net", "ok"),
        ("relay2.example.net", "ok"),
        ("smtp.office365.com", "ok"),
        ("203.0.113.99", "problem"),
    ]
    assert "Microsoft 365" in spf[2].message
    assert spf[3].fix is not None and "ip4:203.0.113.99" in spf[3].fix


async def test_concurrent_spf_checks_use_their_own_servers(dns_server: FakeDNS) -> None:
    """pyspf's lookups go to the server of the check that runs them, even concurrently."""
    with FakeDNS() as other:
        dns_server.zone.add(DOMAIN, "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
        other.zone.add(DOMAIN, "TXT", "v=spf1 include:_spf.example.net -all")
        other.zone.add("_spf.example.net", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
        runs = [check_domain(DOMAIN, sending_hosts=[HOST_IP], resolver=s.server) for s in (dns_server, other)] * 4
        results = await asyncio.gather(*runs)
        assert [r[0].status for r in results] == ["ok", "problem"] * 4
        assert not any(q[0] == "_spf.example.net" for q in dns_server.zone.queries)


async def test_a_large_spf_record_is_read_over_tcp(dns_server: FakeDNS) -> None:
    nets = [f"ip4:198.51.{i}.0/24" for i in range(40)]
    dns_server.zone.add(DOMAIN, "TXT", "v=spf1 " + " ".join(nets) + " -all")  # ~900 bytes: truncated over UDP
    [spf, _dmarc] = await check_domain(DOMAIN, sending_hosts=["198.51.39.7"], resolver=dns_server.server)
    assert spf.status is Status.OK
    assert [q[2] for q in dns_server.zone.queries if q[:2] == (DOMAIN, "TXT")] == ["udp", "tcp", "udp", "tcp"]


async def test_dkim_missing_ours_and_not_ours(dns_server: FakeDNS, our_key: bytes, other_key: bytes) -> None:
    result = (await check(dns_server))["dkim"]
    assert result.status is Status.PROBLEM and "no DKIM record" in result.message
    assert "Google Admin console" in result.message

    platform = {"dkim_selectors": (SELECTOR,), "expected_dkim_key": our_key}
    result = (await check(dns_server, **platform))["dkim"]
    assert result.status is Status.PROBLEM and result.fix == dkim.zone_lines(SELECTOR, DOMAIN, our_key)

    name = f"{SELECTOR}._domainkey.{DOMAIN}"
    dns_server.zone.add(name, "TXT", dkim.public_record(our_key))  # two strings: 255 + the rest
    assert (await check(dns_server, **platform))["dkim"].status is Status.OK

    dns_server.zone.set(name, "TXT", dkim.public_record(other_key))
    result = (await check(dns_server, **platform))["dkim"]
    assert result.status is Status.PROBLEM and "not the key we sign with" in result.message

    value = dkim.public_record(our_key)  # the zone-file form pasted into a web console, quotes and all
    dns_server.zone.set(name, "TXT", '"' + value[:255] + '" "' + value[255:] + '"')
    result = (await check(dns_server, **platform))["dkim"]
    assert result.status is Status.PROBLEM and "can't be read" in result.details[0]


async def test_microsoft_cnames(dns_server: FakeDNS, our_key: bytes) -> None:
    z = dns_server.zone
    for s in MICROSOFT_SELECTORS:
        z.add(f"{s}._domainkey.{DOMAIN}", "CNAME", f"{s}-example-com._domainkey.contoso.onmicrosoft.com")
    result = (await check(dns_server, dkim_selectors=MICROSOFT_SELECTORS))["dkim"]
    assert result.status is Status.WARNING and "no key behind them" in result.message

    z.add("selector1-example-com._domainkey.contoso.onmicrosoft.com", "TXT", dkim.public_record(our_key))
    result = (await check(dns_server, dkim_selectors=MICROSOFT_SELECTORS))["dkim"]
    assert result.status is Status.OK and "through the CNAME" in result.details[0]

    z.clear()
    result = (await check(dns_server, dkim_selectors=MICROSOFT_SELECTORS))["dkim"]
    assert result.status is Status.PROBLEM and result.fix is not None
    assert "selector2._domainkey.example.com. 3600 IN CNAME selector2-example-com._domainkey." in result.fix


async def test_timeouts_and_servfail_are_unknown_never_broken(dns_server: FakeDNS, our_key: bytes) -> None:
    good_zone(dns_server.zone, our_key)
    dns_server.zone.mode = "timeout"
    results = await check(dns_server, timeout=0.5)
    assert {c: r.status for c, r in results.items()} == {"spf": "unknown", "dmarc": "unknown", "dkim": "unknown"}
    assert all(r.fix is None for r in results.values())
    dns_server.zone.mode = "servfail"
    assert {r.status for r in (await check(dns_server)).values()} == {Status.UNKNOWN}

    dns_server.zone.mode = "normal"  # failures deep inside a check: an include that times out inside pyspf
    dns_server.zone.set(DOMAIN, "TXT", "v=spf1 include:_spf.example.net -all")
    dns_server.zone.add("_spf.example.net", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.zone.fail("_spf.example.net", "timeout")
    dns_server.zone.fail("google._domainkey.example.com", "servfail")
    results = await check(dns_server, timeout=0.5)
    assert {c: r.status for c, r in results.items()} == {"spf": "unknown", "dmarc": "ok", "dkim": "unknown"}


async def test_nobody_listening_is_unknown() -> None:
    server = FakeDNS().start()
    address = server.server
    server.stop()
    results = await check_domain(DOMAIN, sending_hosts=[HOST], resolver=address, timeout=0.5)
    assert {r.status for r in results} == {Status.UNKNOWN}


def test_parse_resolver() -> None:
    assert parse_resolver(None) is None and parse_resolver("") is None
    assert parse_resolver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_resolver("10.0.0.2") == ("10.0.0.2", 53)
    assert parse_resolver("[::1]:5353") == ("::1", 5353)
    assert parse_resolver("2001:db8::53") == ("2001:db8::53", 53)
    for bad in ("dns.example.com:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]5353"):
        with pytest.raises(ValueError):
            parse_resolver(bad)
