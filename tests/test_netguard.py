"""The SSRF guard's address rule, as a table over IANA's special-purpose address registries: customer SMTP hosts
must be global unicast — IPv4 outside every special-purpose block (and multicast), IPv6 inside 2000::/3 and outside
every special-purpose block — whatever the running Python's own tables say."""

from __future__ import annotations

import ipaddress

import pytest

from bot.mail.netguard import IPV4_REFUSED, IPV6_REFUSED, is_public_address

# The registries' blocks, as the test knows them (written independently of the guard's table), each probed at its
# first, a middle and its last address.
IPV4_BLOCKS = [
    "0.0.0.0/8", "0.0.0.0/32", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.9/32", "192.0.0.10/32", "192.0.0.170/32",
    "192.0.0.171/32", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24", "192.88.99.2/32",
    "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
    "255.255.255.255/32",
    "224.0.0.0/4",  # multicast (IPv4 address space registry)
]  # fmt: skip
IPV6_BLOCKS = [
    "::1/128", "::/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001::/32", "2001:1::1/128", "2001:1::2/128",
    "2001:1::3/128", "2001:2::/48", "2001:3::/32", "2001:4:112::/48", "2001:10::/28", "2001:20::/28",
    "2001:30::/28", "2001:db8::/32", "2002::/16", "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7",
    "fe80::/10",
    "fec0::/10", "ff00::/8", "4000::/3", "::/3",  # outside 2000::/3: site-local, multicast, unassigned
]  # fmt: skip


def probes(block: str) -> list[str]:
    network = ipaddress.ip_network(block)
    first, last = int(network.network_address), int(network.broadcast_address)
    return [str(ipaddress.ip_address(n)) for n in dict.fromkeys((first, (first + last) // 2, last))]


REFUSED = [address for block in IPV4_BLOCKS + IPV6_BLOCKS for address in probes(block)]


@pytest.mark.parametrize("address", ["fec0::1", "192.0.0.9", "192.0.0.192"])
def test_the_three_addresses_the_issue_found_are_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", REFUSED)
def test_every_special_purpose_block_is_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "142.250.1.108",  # smtp.gmail.com's range
        "52.96.0.1",  # Microsoft 365
        "192.0.1.1",  # next to 192.0.0.0/24
        "192.0.3.1",  # next to TEST-NET-1
        "223.255.255.254",  # just below multicast
        "2001:4860:4860::8888",
        "2a00:1450:4001::1",
        "2607:f8b0:4004::1",
        "2001:200::1",  # just past 2001::/23
        "::ffff:8.8.8.8",  # IPv4-mapped: judged as the IPv4 address it carries
        "64:ff9b::808:808",  # NAT64 well-known prefix (DNS64 networks): judged as 8.8.8.8
    ],
)
def test_global_unicast_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address) is True


@pytest.mark.parametrize("address", ["::ffff:10.0.0.1", "::ffff:192.0.0.9", "64:ff9b::7f00:1", "64:ff9b::c000:9"])
def test_ipv4_carried_in_ipv6_is_judged_as_ipv4(address: str) -> None:
    assert is_public_address(address) is False


def test_the_guards_table_covers_the_registries() -> None:
    guard = {str(n) for n in IPV4_REFUSED} | {str(n) for n in IPV6_REFUSED}
    listed = set(IPV4_BLOCKS + IPV6_BLOCKS) - {"fec0::/10", "ff00::/8", "4000::/3", "::/3"}
    assert listed - guard == set()


def test_independent_of_pythons_own_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever this Python version thinks is global or private, the registry table decides.
    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for flag in ("is_global", "is_private", "is_reserved", "is_multicast", "is_link_local", "is_loopback"):
            monkeypatch.setattr(cls, flag, property(lambda self, f=flag: f == "is_global"))
    assert is_public_address("192.0.0.9") is False
    assert is_public_address("fec0::1") is False
    assert is_public_address("10.0.0.1") is False
    assert is_public_address("8.8.8.8") is True
