"""SPF: the domain publishes one record, and it lets the sending host send (customer SMTP host, or the platform
relay). Evaluated by pyspf (RFC 7208: include/redirect/a/mx/ip4/ip6/ptr/exists, macros, the 10-lookup and void-lookup
limits) in a worker thread, its DNS lookups sent to the same server as ours.

pyspf looks everything up through the module-level function `spf.DNSLookup(name, qtype, strict, timeout)`, which
uses dnspython's process-wide default resolver; `spf.query` takes no resolver. We replace `spf.DNSLookup` once, at
import, with a function that uses the resolver in a ContextVar and falls back to pyspf's own when none is set: other
pyspf users in the process see no change, and each check runs with its own server (asyncio.to_thread runs the worker
in a copy of the context, so setting the variable there is seen by that worker only). It also avoids the deprecated
dns.resolver.query() and maps SERVFAIL and a missing resolver configuration to TempError. If pyspf ever takes a
resolver, drop this."""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
import spf  # type: ignore[import-untyped]

from bot.mail.dkim import zone_txt
from bot.mail.domain_checks.lookups import addresses, txt
from bot.mail.domain_checks.results import SEVERITY, CheckResult, Status, Unknown

# Submission hosts of the big providers are not the hosts their mail leaves from; SPF covers the latter through the
# provider's include. A record with the right include is fine even when the submission host's IP is not listed.
PROVIDER_INCLUDES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("smtp.gmail.com", "smtp-relay.gmail.com", "smtp.google.com"), "_spf.google.com", "Google"),
    ((".office365.com", ".outlook.com"), "spf.protection.outlook.com", "Microsoft 365"),
)

_SPF_RESOLVER: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar(
    "spf_resolver", default=None
)
_PYSPF_LOOKUP = spf.DNSLookup


def _spf_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20.0) -> list[tuple[tuple[str, str], Any]]:
    resolver = _SPF_RESOLVER.get()
    if resolver is None:
        result: list[tuple[tuple[str, str], Any]] = _PYSPF_LOOKUP(name, qtype, strict, timeout)
        return result
    try:
        answer = resolver.resolve(name, qtype, lifetime=max(timeout, 0.05), search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS {type(exc).__name__}: {exc}") from None
    if answer.rrset is None:
        return []
    out: list[tuple[tuple[str, str], Any]] = []
    for rdata in answer.rrset:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


spf.DNSLookup = _spf_lookup


def _run_pyspf(resolver: dns.resolver.Resolver, ip: str, domain: str, helo: str, budget: float) -> tuple[str, str]:
    """pyspf's check_host() for one IP; runs in a worker thread. Returns (result, explanation)."""
    _SPF_RESOLVER.set(resolver)
    # querytime bounds the whole evaluation (each lookup gets what is left); the default is 20 s per lookup.
    query = spf.query(i=ip, s=f"postmaster@{domain}", h=helo, querytime=max(budget, 0.1))
    result, _code, explanation = query.check()
    return str(result), str(explanation)


_SPF_RE = re.compile(r"^v=spf1(\s|$)", re.IGNORECASE)
_ALL_PASS = re.compile(r"(^|\s)\+?all(\s|$)", re.IGNORECASE)


def _provider_for(host: str) -> tuple[str, str] | None:
    host = host.lower().rstrip(".")
    for hosts, include, name in PROVIDER_INCLUDES:
        if any(host == h or (h.startswith(".") and host.endswith(h)) for h in hosts):
            return include, name
    return None


def mechanism_for(host: str) -> str:
    """The SPF mechanism that lets `host` send: the provider's include, ip4:/ip6: for an address, else a:host."""
    provider = _provider_for(host)
    if provider:
        return f"include:{provider[0]}"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"a:{host.rstrip('.')}"
    return f"ip{ip.version}:{ip}"


def spf_with(record: str | None, mechanisms: Iterable[str]) -> str:
    """`record` with the mechanisms added right after v=spf1 (before any all/redirect), or a new record."""
    terms = record.split()[1:] if record else ["~all"]
    new = [m for m in dict.fromkeys(mechanisms) if m.lower() not in {t.lower() for t in terms}]
    return " ".join(["v=spf1", *new, *terms])


async def check_spf(
    domain: str,
    sending_hosts: Sequence[str],
    *,
    resolver: tuple[dns.asyncresolver.Resolver, dns.resolver.Resolver],
    timeout: float,
) -> list[CheckResult]:
    """One result for the record when it is missing or broken, else one result per sending host (or one saying
    the record exists when no sending host is known)."""
    deadline = time.monotonic() + timeout
    aresolver, sresolver = resolver
    try:
        found = await txt(aresolver, domain)
    except Unknown as exc:
        return [CheckResult("spf", domain, Status.UNKNOWN, f"Couldn't check SPF for {domain}: {exc}.")]
    records = [r for r in found.records if _SPF_RE.match(r)]
    wanted = [mechanism_for(h) for h in sending_hosts]
    if (problem := _record_problem(domain, found.exists, records, wanted)) is not None:
        return [problem]
    record = records[0]
    results = []
    if _ALL_PASS.search(record):
        results.append(
            CheckResult(
                "spf",
                domain,
                Status.PROBLEM,
                f"{domain}'s SPF record ends in '+all', which lets any server in the world send as {domain}. "
                "End it with ~all instead:",
                zone_txt(domain, _ALL_PASS.sub(r"\1~all\2", record)),
                (record,),
            )
        )
    for host in sending_hosts:
        results.append(await _spf_host(domain, host, record, aresolver, sresolver, deadline))
    if not results:
        results.append(CheckResult("spf", domain, Status.OK, f"{domain} publishes an SPF record.", None, (record,)))
    return results


def _record_problem(domain: str, exists: bool, records: list[str], wanted: list[str]) -> CheckResult | None:
    """No SPF record, or more than one (receivers ignore SPF then): the record to publish instead."""
    if not records:
        where = "" if exists else f" ({domain} does not exist in DNS)"
        return CheckResult(
            "spf",
            domain,
            Status.PROBLEM,
            f"{domain} has no SPF record{where}, so receivers can't tell which servers may send its mail; "
            "much of it will go to spam. Publish this record:",
            zone_txt(domain, spf_with(None, wanted)),
        )
    if len(records) > 1:
        merged = spf_with(None, [t for r in records for t in r.split()[1:] if not t.lower().endswith("all")])
        return CheckResult(
            "spf",
            domain,
            Status.PROBLEM,
            f"{domain} has {len(records)} SPF records; receivers treat that as an error and ignore SPF. "
            "Replace them with a single record, for example:",
            zone_txt(domain, spf_with(merged, wanted)),
            tuple(records),
        )
    return None


_SPF_STATUS = {
    "pass": Status.OK,
    "fail": Status.PROBLEM,
    "softfail": Status.WARNING,
    "neutral": Status.WARNING,
    "none": Status.PROBLEM,
    "permerror": Status.PROBLEM,
    "temperror": Status.UNKNOWN,
}


async def _evaluate(
    ips: list[str], domain: str, host: str, sresolver: dns.resolver.Resolver, deadline: float
) -> list[tuple[str, str, str]]:
    """pyspf's verdict for each address of the host: (ip, result, explanation)."""
    outcomes: list[tuple[str, str, str]] = []
    for ip in ips:
        budget = deadline - time.monotonic()
        if budget <= 0:
            outcomes.append((ip, "temperror", "out of time"))
            continue
        try:
            async with asyncio.timeout(budget + 0.5):  # a worker thread can't be cancelled; querytime ends it
                result, explanation = await asyncio.to_thread(_run_pyspf, sresolver, ip, domain, host, budget)
        except TimeoutError:
            result, explanation = "temperror", "out of time"
        outcomes.append((ip, result, explanation))
    return outcomes


async def _spf_host(
    domain: str,
    host: str,
    record: str,
    aresolver: dns.asyncresolver.Resolver,
    sresolver: dns.resolver.Resolver,
    deadline: float,
) -> CheckResult:
    try:
        ips = await addresses(aresolver, host)
    except Unknown as exc:
        return CheckResult("spf", host, Status.UNKNOWN, f"Couldn't check SPF for {host}: {exc}.")
    if not ips:
        return CheckResult("spf", host, Status.UNKNOWN, f"{host} has no address in DNS, so SPF could not be checked.")
    outcomes = await _evaluate(ips, domain, host, sresolver, deadline)
    details = tuple(f"{ip}: {r}" + (f" ({e})" if r != "pass" and e else "") for ip, r, e in outcomes)
    status = max((_SPF_STATUS.get(r, Status.UNKNOWN) for _, r, _ in outcomes), key=SEVERITY.__getitem__)
    results = {r for _, r, _ in outcomes}
    provider = _provider_for(host)
    fix = zone_txt(domain, spf_with(record, [mechanism_for(host)]))
    if status is Status.OK:
        return CheckResult("spf", host, Status.OK, f"SPF for {domain} allows {host} to send.", None, details)
    if status is Status.UNKNOWN:
        message = f"Couldn't finish checking SPF for {host}: a DNS lookup timed out or failed."
        return CheckResult("spf", host, Status.UNKNOWN, message, None, details)
    if "permerror" in results:
        explanation = next(e for _, r, e in outcomes if r == "permerror")
        message = (
            f"{domain}'s SPF record has an error ({explanation}); receivers treat it as if there were no SPF. "
            "Fix the record (at most 10 include/a/mx/ptr/exists/redirect lookups in total)."
        )
        return CheckResult("spf", host, Status.PROBLEM, message, None, details)
    if provider and re.search(rf"(^|\s)\+?include:{re.escape(provider[0])}(\s|$)", record, re.IGNORECASE):
        # The submission host's own address need not be listed: mail leaves from the provider's outbound servers.
        message = f"SPF for {domain} includes {provider[1]}'s servers ({provider[0]})."
        return CheckResult("spf", host, Status.OK, message, None, details)
    if "fail" in results or "none" in results:
        message = (
            f"{domain}'s SPF record does not list {host}, and says to reject mail from servers it doesn't list: "
            f"mail sent through {host} will be rejected or go to spam. Publish this record instead:"
        )
    else:  # softfail / neutral
        message = (
            f"{domain}'s SPF record does not list {host}; receivers will treat mail sent through it with "
            "suspicion. Publish this record instead:"
        )
    return CheckResult("spf", host, status, message, fix, details)
