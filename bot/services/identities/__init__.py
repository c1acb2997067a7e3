"""Email identities: the form's rules, Auto create, *Test email setup*, create and edit, and which server sends."""

from bot.services.identities.drafts import Created, IdentityDraft, SmtpDraft, Updated, normalize_app_password
from bot.services.identities.service import IdentityService

__all__ = ["Created", "IdentityDraft", "IdentityService", "SmtpDraft", "Updated", "normalize_app_password"]
