"""Email identities: the form's rules, Auto create, *Test email setup*, create and edit, and which server sends."""

# Names are loaded on first use (bot/services/lazy.py): the inbound door imports only the parts it needs.
from __future__ import annotations

from typing import TYPE_CHECKING

from bot.services.lazy import exports

if TYPE_CHECKING:
    from bot.services.identities.drafts import Created, IdentityDraft, SmtpDraft, Updated, normalize_app_password
    from bot.services.identities.service import IdentityService

_EXPORTS = {
    "Created": "bot.services.identities.drafts",
    "IdentityDraft": "bot.services.identities.drafts",
    "SmtpDraft": "bot.services.identities.drafts",
    "Updated": "bot.services.identities.drafts",
    "normalize_app_password": "bot.services.identities.drafts",
    "IdentityService": "bot.services.identities.service",
}
__all__ = ["Created", "IdentityDraft", "IdentityService", "SmtpDraft", "Updated", "normalize_app_password"]

__getattr__ = exports(__name__, _EXPORTS)
