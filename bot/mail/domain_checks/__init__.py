"""DNS checks of an identity's domain for the health re-checks: SPF, DMARC and DKIM (bot/mail's DNS client kit).

    results = await check_domain(
        "example.com",
        sending_hosts=["smtp.example.com"],       # the customer's SMTP host, or the platform relay host
        dkim_selectors=GOOGLE_SELECTORS,          # or MICROSOFT_SELECTORS, or (DKIM_SELECTOR,) for platform mail
        expected_dkim_key=None,                   # platform identities: our PEM, the published key must match it
        resolver=("127.0.0.1", 5353),             # DNS_RESOLVER (parse_resolver); None: the system's resolver
        timeout=3.0,                              # seconds for each check as a whole
    )

Each result is ok / warning / problem / unknown with a plain-language message and, where publishing something
fixes it, the exact zone-file record. "unknown" (the DNS server timed out or answered SERVFAIL) never means broken.
Lookups use dnspython's async resolver; SPF is evaluated by pyspf (sender_policy.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from bot.mail.domain_checks.dkim_keys import GOOGLE_SELECTORS, MICROSOFT_SELECTORS, check_dkim
from bot.mail.domain_checks.dmarc import check_dmarc
from bot.mail.domain_checks.lookups import DEFAULT_TIMEOUT, parse_resolver, resolvers
from bot.mail.domain_checks.results import CheckResult, Status
from bot.mail.domain_checks.sender_policy import check_spf

__all__ = [
    "DEFAULT_TIMEOUT",
    "GOOGLE_SELECTORS",
    "MICROSOFT_SELECTORS",
    "CheckResult",
    "Status",
    "check_domain",
    "parse_resolver",
]


async def check_domain(
    domain: str,
    *,
    sending_hosts: Sequence[str] = (),
    dkim_selectors: Sequence[str] = (),
    expected_dkim_key: bytes | None = None,
    resolver: tuple[str, int] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[CheckResult]:
    """SPF, DMARC and (with selectors) DKIM for `domain`, concurrently; each check is bounded by `timeout` seconds."""
    domain = domain.strip().rstrip(".").lower()
    both = resolvers(resolver, timeout)
    if both is None:
        checks = ["spf", "dmarc"] + (["dkim"] if dkim_selectors else [])
        why = "no DNS resolver is configured on this host (set DNS_RESOLVER)"
        return [CheckResult(c, domain, Status.UNKNOWN, f"Couldn't check {c.upper()}: {why}.") for c in checks]

    async def bounded(check: str, work: Awaitable[list[CheckResult] | CheckResult]) -> list[CheckResult]:
        try:
            async with asyncio.timeout(timeout + 1.0):  # the resolvers' own lifetimes should fire first
                result = await work
        except TimeoutError:
            return [CheckResult(check, domain, Status.UNKNOWN, f"Checking {check.upper()} took too long.")]
        return result if isinstance(result, list) else [result]

    tasks = [
        bounded("spf", check_spf(domain, sending_hosts, resolver=both, timeout=timeout)),
        bounded("dmarc", check_dmarc(domain, resolver=both[0])),
    ]
    if dkim_selectors:
        dkim = check_dkim(domain, dkim_selectors, resolver=both[0], expected_key=expected_dkim_key)
        tasks.append(bounded("dkim", dkim))
    return [r for group in await asyncio.gather(*tasks) for r in group]
