"""Checking an identity form: every field, the SMTP settings of a company identity, and "Test email setup".

Nothing is stored here. `validate` returns the clean values and the errors by field; *Save changes* accepts the SMTP
settings only with the fingerprint of a passing test of exactly those settings."""

from __future__ import annotations

import re
import unicodedata
from email.message import EmailMessage

from sqlalchemy import select

from bot.mail.domains import PlatformDomains
from bot.mail.messages import setup_test_message
from bot.mail.outbound import MailSender, SetupCheck
from bot.services.identities.drafts import IdentityDraft, SmtpDraft, normalize_app_password
from bot.services.identities.lifecycle import held_until
from bot.services.identities.signed_in import SignedInForms
from bot.services.identities.validation import clean_name, normalize_address
from bot.services.limits.rules import parse_limits
from bot.services.secrets import SecretBox
from models import Database, Identity, IdentityKind, SmtpSecurity
from models.base import utcnow

HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
CUSTOMER_SECURITY = (SmtpSecurity.STARTTLS, SmtpSecurity.SSL)
PASSWORD_AGAIN = (
    "The server, port, security or username changed: type the password again. The saved password is only ever "
    "sent to the server it was saved for."
)


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


class IdentityForms:
    def __init__(
        self,
        db: Database,
        domains: PlatformDomains,
        secrets: SecretBox,
        mail: MailSender,
        signed_in: SignedInForms | None = None,
    ) -> None:
        self.db = db
        self.domains = domains
        self.secrets = secrets
        self.mail = mail
        self.signed_in = signed_in  # "Sign in with Microsoft / Google" (None when no provider is configured)

    def _uses_sign_in(self, draft: IdentityDraft) -> bool:
        return draft.kind == IdentityKind.COMPANY and draft.use_sign_in and self.signed_in is not None

    async def _check_address(self, draft: IdentityDraft, errors: dict[str, str]) -> str | None:
        platform = self.domains.platform
        raw = (draft.address or "").strip()
        if draft.kind == IdentityKind.PLATFORM and raw and "@" not in raw:
            raw = f"{raw}@{platform}"
        address, err = normalize_address(raw)
        if err:
            if not raw and draft.kind == IdentityKind.PLATFORM:
                err = "Enter the address, or click Auto create."
            errors["address"] = err
            return None
        domain = address.rpartition("@")[2]
        if draft.kind == IdentityKind.PLATFORM and domain != platform:
            errors["address"] = f"Platform identities must use an address ending in @{platform}."
            return None
        if draft.kind == IdentityKind.COMPANY and self.domains.is_own(address):
            errors["address"] = (
                f"Company identities use your own domain. For an @{platform} address choose Platform domain."
            )
            return None
        async with self.db.session() as session:
            holder = await session.scalar(select(Identity).where(Identity.address == address))
        if holder is not None and holder.deleted_at is not None:
            until = held_until(holder)
            if until is not None and until <= utcnow():
                return address  # the hold is over: saving releases it (IdentityService.create)
            errors["address"] = (
                f"{address} belonged to an identity deleted on {holder.deleted_at:%Y-%m-%d}: it is held until "
                f"{until:%Y-%m-%d %H:%M} UTC so that late replies still arrive, and can't be used before then."
            )
            return None
        if holder is not None:
            errors["address"] = f"{address} is already taken." + (
                " Click Auto create for a free one." if draft.kind == IdentityKind.PLATFORM else ""
            )
            return None
        return address

    @staticmethod
    def same_server(stored: Identity, draft: IdentityDraft, address: str | None = None) -> bool:
        """Whether the form still points where the saved password was saved for: same host, port, security and
        username. Only then may an empty password field mean "keep the saved one"."""
        port = (draft.smtp_port or "").strip()
        typed = (
            (draft.smtp_host or "").strip().lower().rstrip("."),
            int(port) if port.isdigit() else None,
            draft.smtp_security or "",
            (draft.smtp_username or "").strip() or (address or stored.address),
        )
        saved = (stored.smtp_host, stored.smtp_port, stored.smtp_security, stored.smtp_username or stored.address)
        return typed == saved

    def check_smtp_fields(
        self, draft: IdentityDraft, address: str | None, *, stored: Identity | None = None
    ) -> tuple[SmtpDraft | None, dict[str, str]]:
        """The SMTP part of a company-domain form. `stored` supplies the saved password when none was typed, and
        only while the settings still point at the server it was saved for: the saved password never goes to
        another host, port, security or username."""
        errors: dict[str, str] = {}
        host = (draft.smtp_host or "").strip().lower().rstrip(".")
        if not host:
            errors["smtp_host"] = "Enter the SMTP server, e.g. smtp.gmail.com."
        elif not HOSTNAME.fullmatch(host):
            errors["smtp_host"] = "That is not a server name: use letters, digits, dots and dashes only."
        port: int | None = None
        port_text = (draft.smtp_port or "").strip()
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            errors["smtp_port"] = "Enter the SMTP port: a number such as 587 (STARTTLS) or 465 (SSL/TLS)."
        else:
            port = int(port_text)
        security = draft.smtp_security or ""
        if security not in CUSTOMER_SECURITY:
            errors["smtp_security"] = "Choose STARTTLS or SSL/TLS."
        username = (draft.smtp_username or "").strip() or (address or "")
        if has_control_characters(username):
            errors["smtp_username"] = "The username can't contain line breaks or control characters."
        password = draft.smtp_password or ""
        if any(c in password for c in "\r\n\x00"):
            errors["smtp_password"] = "The password can't contain line breaks."
        password = normalize_app_password(password)
        if not password:
            if stored is not None and stored.smtp_password_encrypted and self.same_server(stored, draft, address):
                password = self.secrets.decrypt(stored.smtp_password_encrypted)
            elif stored is not None and stored.smtp_password_encrypted:
                errors["smtp_password"] = PASSWORD_AGAIN
            else:
                errors["smtp_password"] = (
                    "Enter the SMTP password (for Gmail and Outlook: a 16-character app password)."
                )
        if errors or port is None or not address:
            return None, errors
        return SmtpDraft(host, port, SmtpSecurity(security), username, password), errors

    def fingerprint(self, smtp: SmtpDraft, address: str) -> str:
        """Keyed HMAC of exactly the settings a test passed with; reveals nothing, safe in private_metadata."""
        return self.secrets.mac("smtp", address, smtp.host, str(smtp.port), smtp.security, smtp.username, smtp.password)

    async def validate(
        self, draft: IdentityDraft, *, stored: Identity | None = None
    ) -> tuple[dict[str, object], dict[str, str]]:
        """Parse a draft (a new identity, or an edit of `stored`). Returns (clean values, errors by field)."""
        errors: dict[str, str] = {}
        clean: dict[str, object] = {}
        if draft.kind not in (IdentityKind.PLATFORM, IdentityKind.COMPANY):
            errors["kind"] = "Choose the kind of identity."
            return clean, errors
        for name, what in (("display_name", "sender's display name"), ("company_name", "sender company name")):
            value, err = clean_name(getattr(draft, name), what)
            clean[name] = value
            if err:
                errors[name] = err

        address = stored.address if stored is not None else await self._check_address(draft, errors)
        clean["address"] = address

        forwarding, err = normalize_address(draft.forwarding_address)
        if err:
            errors["forwarding_address"] = err
        elif self.domains.is_own(forwarding) or forwarding == address:
            errors["forwarding_address"] = (
                "Responses must be forwarded to a mailbox outside the platform (for example your own inbox)."
            )
        else:
            clean["forwarding_address"] = forwarding

        if stored is None:
            hourly, daily, limit_errors = parse_limits(draft.hourly_limit, draft.daily_limit)
            errors.update(limit_errors)
            clean["hourly_limit"], clean["daily_limit"] = hourly, daily

        if not draft.notices_channel:
            errors["notices_channel"] = "Choose the channel where verification notices go."
        clean["notices_channel"] = draft.notices_channel

        if self._uses_sign_in(draft):
            await self._validate_sign_in(draft, address, stored, clean, errors)
        elif draft.kind == IdentityKind.COMPANY:
            smtp, smtp_errors = self.check_smtp_fields(draft, address, stored=stored)
            errors.update(smtp_errors)
            clean["smtp"] = smtp
            if smtp is not None and address:
                unchanged = stored is not None and self.same_smtp(stored, smtp)
                if not unchanged and draft.tested_fingerprint != self.fingerprint(smtp, address):
                    errors["smtp_password"] = (
                        "Click Test email setup and wait for “Email identity seems to be correctly set up” before "
                        "saving: these settings have not passed a test yet."
                    )
        if draft.kind == IdentityKind.COMPANY:
            tracking = (stored.tracking_address if stored is not None else draft.tracking_address) or ""
            if stored is None and not tracking.endswith("@" + self.domains.tracking):
                tracking = self.domains.new_tracking_address()
            clean["tracking_address"] = tracking
        return clean, errors

    async def _validate_sign_in(
        self,
        draft: IdentityDraft,
        address: str | None,
        stored: Identity | None,
        clean: dict[str, object],
        errors: dict[str, str],
    ) -> None:
        """A company form signed in with Microsoft/Google: the sign-in instead of the SMTP settings."""
        assert self.signed_in is not None
        signed, sign_in_errors = await self.signed_in.check(draft, address, stored=stored)
        errors.update(sign_in_errors)
        clean["sign_in"] = signed
        if signed is not None and address and (stored is None or signed.new):
            if draft.tested_fingerprint != self.signed_in.fingerprint(signed, address):
                errors["sign_in"] = (
                    "Click Test email setup and wait for “Email identity seems to be correctly set up” before "
                    "saving: this sign-in has not passed a test yet."
                )

    def same_smtp(self, stored: Identity, smtp: SmtpDraft) -> bool:
        if (stored.smtp_host, stored.smtp_port, stored.smtp_security, stored.smtp_username) != (
            smtp.host,
            smtp.port,
            smtp.security,
            smtp.username,
        ):
            return False
        encrypted = stored.smtp_password_encrypted
        return bool(encrypted) and self.secrets.decrypt(encrypted or "") == smtp.password

    async def test_setup(
        self, draft: IdentityDraft, *, stored: Identity | None = None
    ) -> tuple[SetupCheck, str | None]:
        """Run a real SMTP session with the form's settings. Returns the result and, when it passed, the
        fingerprint that lets Save changes accept exactly these settings."""
        errors: dict[str, str] = {}
        address = stored.address if stored is not None else None
        if address is None:
            address, err = normalize_address(draft.address)
            if err:
                errors["address"] = "Enter the email address first."
        if self._uses_sign_in(draft) and self.signed_in is not None:
            if errors:
                return SetupCheck(ok=False, message=f"Can't test yet: {errors['address']}", diagnosis=None), None
            message = self._test_message(draft, address, stored)
            return await self.signed_in.test_setup(draft, address, message, stored=stored)
        smtp, smtp_errors = self.check_smtp_fields(draft, address, stored=stored)
        errors.update(smtp_errors)
        if errors or smtp is None or not address:
            first = next(iter(errors.values()))
            return SetupCheck(ok=False, message=f"Can't test yet: {first}", diagnosis=None), None
        message = self._test_message(draft, address, stored)
        result = await self.mail.check_setup(smtp.server(), sender=address, test_message=message)
        return result, (self.fingerprint(smtp, address) if result.ok else None)

    def _test_message(self, draft: IdentityDraft, address: str, stored: Identity | None) -> EmailMessage:
        display_name = (draft.display_name or "").strip()
        if has_control_characters(display_name):
            display_name = ""
        to = (
            (stored.tracking_address if stored else None)
            or draft.tracking_address
            or self.domains.new_tracking_address()
        )
        return setup_test_message(display_name, address, to)
