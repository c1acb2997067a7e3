"""Rules for the names and addresses people type into identity forms. Each returns a message a person can act on,
or None."""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

MAX_NAME_LENGTH = 100


def clean_name(value: str | None, what: str) -> tuple[str, str | None]:
    """Strip a display/company name and check it. Control characters (CR, LF, tabs, …) are refused, since
    names end up in mail headers."""
    v = (value or "").strip()
    if not v:
        return v, f"Enter the {what}."
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in v):
        return v, f"The {what} can't contain line breaks or other control characters."
    if len(v) > MAX_NAME_LENGTH:
        return v, f"The {what} can be at most {MAX_NAME_LENGTH} characters (this one has {len(v)})."
    return v, None


def normalize_address(value: str | None, *, allow_special_use: bool = False) -> tuple[str, str | None]:
    """Validate an email address (no DNS lookups at form time) and return its normalized, lower-cased form."""
    v = (value or "").strip()
    if not v:
        return v, "Enter an email address."
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in v):
        return v, "An email address can't contain line breaks or control characters."
    try:
        result = validate_email(v, check_deliverability=False, allow_smtputf8=False, test_environment=allow_special_use)
    except EmailNotValidError as exc:
        return v, f"That is not a valid email address: {exc}"
    return result.normalized.lower(), None


def local_part_from_name(display_name: str) -> str:
    """'Jane Doe' -> 'jane.doe'; accents dropped, anything else becomes a dot."""
    ascii_name = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    local = re.sub(r"[^a-z0-9]+", ".", ascii_name.lower()).strip(".")
    return local[:48].strip(".") or "sender"
