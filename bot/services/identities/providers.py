"""Email service providers the company-domain form knows, with their usual SMTP settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    key: str
    label: str
    host: str | None
    port: int
    security: str
    password_hint: str


APP_PASSWORD_HINT = (
    "Use a 16-character app password, not your normal password: turn on 2-step verification for the mailbox, "
    "then create an app password for mail."
)

PROVIDERS: dict[str, Provider] = {
    p.key: p
    for p in (
        Provider(
            "google",
            "Google Workspace / Gmail",
            "smtp.gmail.com",
            587,
            "starttls",
            APP_PASSWORD_HINT + " (Google Account → Security → 2-Step Verification → App passwords)",
        ),
        Provider(
            "microsoft",
            "Microsoft 365 / Outlook",
            "smtp.office365.com",
            587,
            "starttls",
            APP_PASSWORD_HINT + " (My Account → Security info → Add method → App password). "
            "SMTP AUTH must be enabled for the mailbox.",
        ),
        Provider(
            "zoho",
            "Zoho Mail",
            "smtp.zoho.com",
            587,
            "starttls",
            "Use an application-specific password if two-factor authentication is on (Zoho Accounts → Security).",
        ),
        Provider(
            "other",
            "Other SMTP server",
            None,
            587,
            "starttls",
            "The SMTP password for this mailbox. Ask your IT administrator or email provider if unsure.",
        ),
    )
}

SECURITY_LABELS = {"starttls": "STARTTLS (usually port 587)", "ssl": "SSL/TLS (usually port 465)"}
