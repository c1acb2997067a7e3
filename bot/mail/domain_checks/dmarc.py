"""DMARC: a record at _dmarc.<domain> (or, for a subdomain, its parent's), with a policy. Missing is a problem;
p=none is a warning with advice (receivers deliver failing mail anyway); quarantine or reject is fine."""

from __future__ import annotations

import re

import dns.asyncresolver

from bot.mail.dkim import zone_txt
from bot.mail.domain_checks.lookups import tags, txt
from bot.mail.domain_checks.results import CheckResult, Status, Unknown

_DMARC_RE = re.compile(r"^v\s*=\s*DMARC1\s*(;|$)", re.IGNORECASE)


def dmarc_names(domain: str) -> list[str]:
    """Where DMARC policy is looked for: the domain, then its parents (DMARCbis DNS tree walk, no public suffix
    list; at most 8 queries: after the domain itself, jump to the 7-label parent). The TLD is never queried."""
    labels = domain.rstrip(".").lower().split(".")
    names = [".".join(labels)]
    start = max(1, len(labels) - 7)
    for i in range(start, len(labels) - 1):
        names.append(".".join(labels[i:]))
    return names


async def check_dmarc(domain: str, *, resolver: dns.asyncresolver.Resolver) -> CheckResult:
    rua = f"dmarc-reports@{domain}"
    for name in dmarc_names(domain):
        try:
            found = await txt(resolver, f"_dmarc.{name}")
        except Unknown as exc:
            return CheckResult("dmarc", domain, Status.UNKNOWN, f"Couldn't check DMARC for {domain}: {exc}.")
        records = [r for r in found.records if _DMARC_RE.match(r)]
        if not records:
            continue
        if len(records) > 1:
            return CheckResult(
                "dmarc",
                domain,
                Status.PROBLEM,
                f"_dmarc.{name} has {len(records)} DMARC records; receivers then ignore DMARC entirely. "
                "Keep exactly one, for example:",
                zone_txt(f"_dmarc.{name}", records[0]),
                tuple(records),
            )
        return _judge(domain, name, records[0])
    return CheckResult(
        "dmarc",
        domain,
        Status.PROBLEM,
        f"{domain} has no DMARC record. Gmail, Yahoo and Microsoft require one from bulk senders, and without it "
        f"mail from {domain} is more likely to be marked as spam. Publish this record (reports go to {rua}):",
        zone_txt(f"_dmarc.{domain}", f"v=DMARC1; p=none; rua=mailto:{rua}"),
    )


def _judge(domain: str, name: str, record: str) -> CheckResult:
    found = tags(record)
    inherited = name != domain
    policy = (found["sp"] if inherited and "sp" in found else found.get("p", "")).lower()
    where = f"_dmarc.{name}" if not inherited else f"_dmarc.{name} (the parent domain's record applies to {domain})"
    details = (f"_dmarc.{name}: {record}",)
    if policy not in ("none", "quarantine", "reject"):
        fixed = "v=DMARC1; p=none" + "".join(f"; {k}={v}" for k, v in found.items() if k not in ("v", "p"))
        return CheckResult(
            "dmarc",
            domain,
            Status.PROBLEM,
            f"The DMARC record at {where} has no valid policy (p=none, quarantine or reject); receivers may ignore "
            "it. Publish:",
            zone_txt(f"_dmarc.{name}", fixed),
            details,
        )
    if policy == "none":
        stronger = re.sub(r"(;\s*p\s*=\s*)none", r"\1quarantine", record, count=1, flags=re.IGNORECASE)
        if "rua" not in found:
            stronger += f"; rua=mailto:dmarc-reports@{name}"
        return CheckResult(
            "dmarc",
            domain,
            Status.WARNING,
            f"DMARC is published at {where} but with p=none, so receivers are told to deliver mail that fails the "
            "checks anyway: anyone can still send as this domain. Read the aggregate reports (rua) for a few weeks; "
            "once all your real mail passes, move to p=quarantine and later p=reject:",
            zone_txt(f"_dmarc.{name}", stronger) if not inherited else None,
            details,
        )
    pct = found.get("pct", "100")
    note = f" (applied to {pct}% of failing mail)" if pct != "100" else ""
    return CheckResult(
        "dmarc", domain, Status.OK, f"DMARC is published at {where} with p={policy}{note}.", None, details
    )
