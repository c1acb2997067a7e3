"""The checks of one health run that take moments: the SMTP login with the saved settings (company identities) and
DNS for the identity's domain. Each becomes a HealthFinding: ok, warning, problem, or unknown when the check could not
run (which never counts as broken). The tracking probe spans time and is run by the service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.mail.domain_checks import GOOGLE_SELECTORS, MICROSOFT_SELECTORS, CheckResult, Status, check_domain
from bot.mail.sign_in_diagnosis import PROVIDER_UNREACHABLE, SIGN_IN_AGAIN
from bot.services.identities import IdentityService
from bot.services.notifier import HealthFinding
from models import Identity, IdentityKind

log = logging.getLogger(__name__)

LOGIN, TRACKING, SPF, DMARC, DKIM = "login", "tracking", "spf", "dmarc", "dkim"

# Login failures that say nothing about the saved settings (the server is down or slow, a 4xx, our side failed):
# "couldn't tell", retried at the next interval, never "broken" on their own.
TRANSIENT_LOGIN = frozenset({"temporary", "timeout", "refused", "host_not_found", PROVIDER_UNREACHABLE, "unexpected"})
PASSWORD_REFUSED = frozenset({"auth_failed", "app_password_required"})
NO_SETTINGS = "no_settings"

# What the tracking probe's finding says (HealthFinding.code).
COPY_ARRIVED = "copy_arrived"
COPY_MISSING = "copy_missing"
PROBE_NOT_SENT = "probe_not_sent"


@dataclass(frozen=True)
class DomainSettings:
    """What the DNS checks need from the configuration: DNS_RESOLVER (None: the system's), how long one check may
    take, and for platform identities the platform domain, the relay that sends for it and our DKIM selector and
    key (a callable: the key is loaded, or generated, on first use)."""

    resolver: tuple[str, int] | None
    timeout: float
    platform_domain: str
    relay_host: str | None
    dkim_selector: str
    dkim_key: Callable[[], bytes] | None = None


def dkim_selectors(identity: Identity) -> tuple[str, ...]:
    """The selectors a company identity's provider signs with (Google `google`, Microsoft `selector1`/`selector2`);
    none when the provider is unknown (its selector can't be guessed, so DKIM is not checked)."""
    provider = (identity.esp_provider or "").lower()
    host = (identity.smtp_host or "").lower()
    if provider == "google" or host.endswith(("gmail.com", "google.com")):
        return GOOGLE_SELECTORS
    if provider == "microsoft" or host.endswith(("office365.com", "outlook.com")):
        return MICROSOFT_SELECTORS
    return ()


class HealthChecks:
    def __init__(self, identities: IdentityService, domain: DomainSettings) -> None:
        self.identities = identities
        self.domain = domain

    async def login(self, identity: Identity) -> HealthFinding | None:
        """Log in to the identity's own server with the saved settings (EHLO, TLS, AUTH, MAIL FROM, then QUIT; nothing
        is sent). None for platform identities (the platform relay sends for them)."""
        if identity.kind != IdentityKind.COMPANY:
            return None
        where = f"{identity.smtp_host}:{identity.smtp_port}"
        try:
            result = await self.identities.check_login(identity)
        except Exception:  # noqa: BLE001 - our failure, not the identity's: couldn't tell
            log.exception("health: the login check of identity %s failed unexpectedly", identity.id)
            return HealthFinding(LOGIN, Status.UNKNOWN, where, "unexpected", message="The login could not be tried.")
        if result.ok:
            return HealthFinding(LOGIN, Status.OK, where)
        diagnosis = result.diagnosis
        if diagnosis is None:  # no usable settings (e.g. a sign-in whose provider is no longer configured)
            return HealthFinding(LOGIN, Status.PROBLEM, where, NO_SETTINGS, result.message, result.message)
        status = Status.UNKNOWN if diagnosis.code in TRANSIENT_LOGIN else Status.PROBLEM
        if diagnosis.code in PASSWORD_REFUSED:
            summary = "the mail server refused the password"
        elif diagnosis.code == SIGN_IN_AGAIN:
            summary = "the mailbox sign-in was revoked or has expired"
        else:
            summary = diagnosis.problem.rstrip(".")
        return HealthFinding(LOGIN, status, where, diagnosis.code, summary, diagnosis.problem, diagnosis.fix)

    async def dns(self, identity: Identity) -> list[HealthFinding]:
        """SPF (for the sending host where it is known), DMARC and DKIM of the identity's domain."""
        d = self.domain
        if identity.kind == IdentityKind.COMPANY:
            domain = identity.address.rpartition("@")[2]
            hosts = [identity.smtp_host] if identity.smtp_host else []
            selectors, key = dkim_selectors(identity), None
        else:
            domain, hosts, selectors = d.platform_domain, [d.relay_host] if d.relay_host else [], (d.dkim_selector,)
            try:
                key = await asyncio.to_thread(d.dkim_key) if d.dkim_key is not None else None
            except Exception:  # noqa: BLE001 - the key can't be read: DKIM can't be compared, the rest can
                log.exception("health: the DKIM key could not be loaded")
                key, selectors = None, ()
        try:
            results = await check_domain(
                domain,
                sending_hosts=hosts,
                dkim_selectors=selectors,
                expected_dkim_key=key,
                resolver=d.resolver,
                timeout=d.timeout,
            )
        except Exception:  # noqa: BLE001 - a bug or an odd answer must not stop the other checks
            log.exception("health: the DNS checks of %s failed unexpectedly", domain)
            return [HealthFinding(c, Status.UNKNOWN, domain, message="The DNS check failed.") for c in (SPF, DMARC)]
        return [_finding(domain, r) for r in results]


def _finding(domain: str, result: CheckResult) -> HealthFinding:
    return HealthFinding(
        result.check,
        result.status,
        result.subject,
        summary=_summary(domain, result),
        message=result.message,
        record=result.fix or "",
    )


def _summary(domain: str, result: CheckResult) -> str:
    if result.check == SPF:
        if result.subject != domain:
            return f"SPF of {domain} does not let {result.subject} send"
        return f"{domain} has no usable SPF record"
    if result.check == DMARC:
        return f"{domain} has no usable DMARC record" if result.status == Status.PROBLEM else f"DMARC of {domain}"
    return f"{domain} has no usable DKIM record"
