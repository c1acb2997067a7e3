"""What the identity form carries into the service (a draft, unparsed) and what comes back (created, updated)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.mail.outbound import SmtpServer
from models import Identity, IdentityKind, LimitRequest, SmtpSecurity, StepName


@dataclass
class IdentityDraft:
    """What a person typed into the identity form, unparsed. Keys of FormErrors use these field names."""

    kind: str = IdentityKind.PLATFORM
    display_name: str | None = None
    company_name: str | None = None
    address: str | None = None
    hourly_limit: str | None = None
    daily_limit: str | None = None
    forwarding_address: str | None = None
    notices_channel: str | None = None
    # Company domain only.
    esp_provider: str | None = None
    smtp_host: str | None = None
    smtp_port: str | None = None
    smtp_security: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    tracking_address: str | None = None
    tested_fingerprint: str | None = None
    # Signed in with Microsoft/Google instead of a password: the sign-in made in this modal by this Slack user.
    use_sign_in: bool = False
    sign_in_user: str | None = None
    sign_in_view: str | None = None


@dataclass
class SmtpDraft:
    """Checked SMTP settings of a company-domain form (password is the effective one: typed, or kept)."""

    host: str
    port: int
    security: SmtpSecurity
    username: str
    password: str = field(repr=False)

    def server(self) -> SmtpServer:
        return SmtpServer(self.host, self.port, self.security, self.username, self.password)


@dataclass
class Created:
    identity: Identity
    limit_request: LimitRequest | None
    duplicate: bool = False


@dataclass
class Updated:
    identity: Identity
    changed: list[str]
    smtp_changed: bool
    forwarding_changed: bool
    reset_steps: list[StepName] = field(default_factory=list)  # verification steps the change made void
    reset_reason: str = ""


def normalize_app_password(password: str) -> str:
    """Google shows app passwords as four groups of four ("abcd efgh ijkl mnop"); the spaces are not part of it."""
    squeezed = "".join(password.split())
    if len(squeezed) == 16 and squeezed.isalpha() and squeezed != password:
        return squeezed
    return password.strip()
