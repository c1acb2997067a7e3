"""The company-domain form when the mailbox is signed in with Microsoft or Google instead of a password: which
sign-in the form uses, whether it is the identity's mailbox, *Test email setup* over XOAUTH2, and the server an
identity sends through (always the provider's own SMTP server: a token never goes to a host someone typed)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

from bot.mail.outbound import MailSender, SetupCheck, SmtpServer
from bot.mail.sign_in_diagnosis import wrong_mailbox
from bot.services.identities.drafts import IdentityDraft
from bot.services.identities.grants import MailboxGrants
from bot.services.secrets import SecretBox
from models import Identity, MailboxGrant, SmtpSecurity


@dataclass(frozen=True)
class SignedInDraft:
    """The sign-in a company form will save: its grant (the modal's new one, or the identity's own)."""

    grant: MailboxGrant
    new: bool  # made in this modal (else the identity's existing sign-in, unchanged)


def not_signed_in_message(label: str) -> str:
    return f"Click Sign in with {label} and finish signing in first (or use a password instead)."


class SignedInForms:
    def __init__(self, grants: MailboxGrants, secrets: SecretBox, mail: MailSender) -> None:
        self.grants = grants
        self.secrets = secrets
        self.mail = mail

    def label(self, provider: str | None) -> str:
        found = self.grants.providers.get(provider or "")
        return found.label if found else (provider or "your provider").title()

    async def draft_grant(self, draft: IdentityDraft, stored: Identity | None) -> SignedInDraft | None:
        """The modal's own sign-in (by this Slack user, in this modal), else the identity's current one."""
        if draft.sign_in_user and draft.sign_in_view:
            grant = await self.grants.for_form(draft.sign_in_user, draft.sign_in_view)
            if grant is not None:
                return SignedInDraft(grant, new=True)
        if stored is not None:
            grant = await self.grants.for_identity(stored.id)
            if grant is not None:
                return SignedInDraft(grant, new=False)
        return None

    async def check(
        self, draft: IdentityDraft, address: str | None, *, stored: Identity | None = None
    ) -> tuple[SignedInDraft | None, dict[str, str]]:
        """The sign-in part of a company form: signed in, and as the identity's own mailbox."""
        signed = await self.draft_grant(draft, stored)
        if signed is None:
            return None, {"sign_in": not_signed_in_message(self.label(draft.esp_provider))}
        grant = signed.grant
        if self.grants.provider(grant) is None:
            return None, {"sign_in": f"Sign in with {self.label(grant.provider)} is not available any more."}
        if address and grant.mailbox.lower() != address.lower():
            return None, {"address": wrong_mailbox(self.label(grant.provider), grant.mailbox, address).text}
        return signed, {}

    def fingerprint(self, signed: SignedInDraft, address: str) -> str:
        """Keyed HMAC of exactly the sign-in a test passed with; safe in private_metadata."""
        grant = signed.grant
        return self.secrets.mac("oauth-login", address, grant.provider, str(grant.id), grant.mailbox)

    def server(self, grant: MailboxGrant) -> SmtpServer:
        """The provider's SMTP server, logging in as the mailbox with its access token."""
        provider = self.grants.provider(grant)
        if provider is None:
            raise LookupError(f"sign-in with {grant.provider} is not configured")
        return SmtpServer(
            provider.smtp_host,
            provider.smtp_port,
            SmtpSecurity.STARTTLS,
            grant.mailbox,
            bearer=self.grants.bearer(grant),
        )

    async def test_setup(
        self, draft: IdentityDraft, address: str, message: EmailMessage, *, stored: Identity | None
    ) -> tuple[SetupCheck, str | None]:
        """*Test email setup* with the sign-in: a real session, XOAUTH2, and the test message."""
        signed, errors = await self.check(draft, address, stored=stored)
        if signed is None:
            first = next(iter(errors.values()))
            return SetupCheck(ok=False, message=f"Can't test yet: {first}", diagnosis=None), None
        result = await self.mail.check_setup(self.server(signed.grant), sender=address, test_message=message)
        return result, (self.fingerprint(signed, address) if result.ok else None)
