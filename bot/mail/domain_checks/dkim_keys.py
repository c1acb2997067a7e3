"""DKIM: a usable key published for the provider's known selectors (Google `google`, Microsoft `selector1` /
`selector2`), or, for platform identities, our own DKIM_SELECTOR record carrying the key we sign with.

CNAMEs are followed the way a verifier follows them: `selector1._domainkey.example.com CNAME
selector1-example-com._domainkey.tenant.onmicrosoft.com` is fine when the target has the key; a CNAME whose target has
no key yet means the provider hasn't enabled DKIM (a warning with the steps, not a missing record)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from bot.mail.dkim import public_key_der, zone_lines
from bot.mail.domain_checks.lookups import tags, txt
from bot.mail.domain_checks.results import CheckResult, Status, Unknown

GOOGLE_SELECTORS: tuple[str, ...] = ("google",)
MICROSOFT_SELECTORS: tuple[str, ...] = ("selector1", "selector2")


@dataclass(frozen=True)
class _Key:
    selector: str
    state: str  # "key" | "missing" | "dangling" | "revoked" | "invalid" | "unknown" | "several"
    note: str
    key: rsa.RSAPublicKey | None = None


def _parse(selector: str, records: list[str], target: str | None) -> _Key:
    via = f" (through the CNAME to {target})" if target else ""
    dkim_records = [r for r in records if "p=" in r.replace(" ", "")]
    if not dkim_records:
        if target:
            return _Key(selector, "dangling", f"is a CNAME to {target}, which has no key yet")
        return _Key(selector, "missing", "has no DKIM record")
    if len(dkim_records) > 1:
        return _Key(selector, "several", f"has {len(dkim_records)} DKIM records{via}; verifiers pick one at random")
    found = tags(dkim_records[0])
    if found.get("v", "DKIM1") != "DKIM1":
        return _Key(selector, "invalid", f"has a record with v={found['v']}{via}; it must be v=DKIM1")
    k = found.get("k", "rsa").lower()
    p = re.sub(r"\s+", "", found.get("p", ""))
    if not p:
        return _Key(selector, "revoked", f"has an empty p= (the key was revoked){via}")
    if k == "ed25519":
        return _Key(selector, "key", f"publishes an ed25519 key{via}")
    if k != "rsa":
        return _Key(selector, "invalid", f"has an unknown key type k={k}{via}")
    try:
        key = load_der_public_key(base64.b64decode(p, validate=True))
    except (ValueError, binascii.Error):
        return _Key(
            selector,
            "invalid",
            f"has a key that can't be read{via}: check the record was pasted whole, with its parts joined without "
            "spaces or quotes",
        )
    if not isinstance(key, rsa.RSAPublicKey):
        return _Key(selector, "invalid", f"has a non-RSA key under k=rsa{via}")
    if key.key_size < 1024:
        return _Key(selector, "invalid", f"has a {key.key_size}-bit key{via}; receivers ignore keys under 1024 bits")
    return _Key(selector, "key", f"publishes a {key.key_size}-bit RSA key{via}", key)


def _provider_hint(selectors: Sequence[str], domain: str) -> tuple[str, str | None]:
    if set(selectors) == set(GOOGLE_SELECTORS):
        return (
            "In the Google Admin console open Apps > Google Workspace > Gmail > Authenticate email, generate a "
            "2048-bit key with the prefix 'google', publish the TXT record it shows at google._domainkey, then "
            "click Start authentication.",
            None,
        )
    if set(selectors) <= set(MICROSOFT_SELECTORS):
        dashed = domain.replace(".", "-")
        fix = "\n".join(
            f"{s}._domainkey.{domain}. 3600 IN CNAME {s}-{dashed}._domainkey.TENANT.onmicrosoft.com."
            for s in MICROSOFT_SELECTORS
        )
        return (
            "In the Microsoft Defender portal (Email & collaboration > Policies > Email authentication settings > "
            "DKIM) select the domain: it shows the two CNAME records to publish (copy its exact values; TENANT "
            "below stands for your initial .onmicrosoft.com name), then turn on 'Sign messages for this domain "
            "with DKIM signatures'.",
            fix,
        )
    return "Publish the DKIM record your mail provider gives you for this selector.", None


async def check_dkim(
    domain: str,
    selectors: Sequence[str],
    *,
    resolver: dns.asyncresolver.Resolver,
    expected_key: bytes | None = None,
) -> CheckResult:
    """Good when at least one selector publishes a usable key (Microsoft publishes two and signs with one), and,
    with `expected_key` (our PEM, platform identities), when a published key is ours."""
    subject = ", ".join(f"{s}._domainkey" for s in selectors)

    async def one(selector: str) -> _Key:
        try:
            found = await txt(resolver, f"{selector}._domainkey.{domain}")
        except Unknown as exc:
            return _Key(selector, "unknown", f"couldn't be checked: {exc}")
        return _parse(selector, found.records, found.target)

    keys = await asyncio.gather(*(one(s) for s in selectors))
    details = tuple(f"{k.selector}._domainkey.{domain} {k.note}" for k in keys)
    if expected_key is not None:
        return _ours(domain, selectors, keys, expected_key, subject, details)
    if good := [k for k in keys if k.state == "key"]:
        which = ", ".join(k.selector for k in good)
        return CheckResult(
            "dkim", subject, Status.OK, f"DKIM is set up for {domain} (selector {which}).", None, details
        )
    if any(k.state == "unknown" for k in keys):  # a selector that timed out might have been the good one
        return CheckResult("dkim", subject, Status.UNKNOWN, f"Couldn't check DKIM for {domain}.", None, details)
    hint, provider_fix = _provider_hint(selectors, domain)
    if any(k.state == "dangling" for k in keys):
        message = (
            f"The DKIM CNAME records for {domain} are published, but the provider has no key behind them yet, so "
            f"mail isn't DKIM-signed. {hint}"
        )
        return CheckResult("dkim", subject, Status.WARNING, message, None, details)
    if broken := [k for k in keys if k.state in ("revoked", "invalid", "several")]:
        what = f"{broken[0].selector}._domainkey.{domain} {broken[0].note}"
        message = f"The DKIM record for {domain} can't be used: {what}. {hint}"
        return CheckResult("dkim", subject, Status.PROBLEM, message, provider_fix, details)
    message = f"{domain} has no DKIM record, so mail isn't DKIM-signed. {hint}"
    return CheckResult("dkim", subject, Status.PROBLEM, message, provider_fix, details)


def _ours(
    domain: str, selectors: Sequence[str], keys: Sequence[_Key], pem: bytes, subject: str, details: tuple[str, ...]
) -> CheckResult:
    ours = load_der_public_key(public_key_der(pem))
    assert isinstance(ours, rsa.RSAPublicKey)
    fix = "\n".join(zone_lines(s, domain, pem) for s in selectors)
    if any(k.key is not None and k.key.public_numbers() == ours.public_numbers() for k in keys):
        return CheckResult(
            "dkim", subject, Status.OK, f"DKIM for {domain} publishes the key we sign with.", None, details
        )
    if any(k.state == "unknown" for k in keys):
        return CheckResult("dkim", subject, Status.UNKNOWN, f"Couldn't check DKIM for {domain}.", None, details)
    if any(k.state == "key" for k in keys):
        message = (
            f"The DKIM key published for {domain} is not the key we sign with, so our mail fails DKIM. "
            "Replace the record with:"
        )
    else:
        message = f"{domain} does not publish our DKIM key, so our mail fails DKIM. Publish:"
    return CheckResult("dkim", subject, Status.PROBLEM, message, fix, details)
