"""Rules for sending limits: whole numbers of at least 1, the daily limit at most 250, hourly within daily, and
what needs a manager's approval. Each check returns a message a person can act on."""

from __future__ import annotations

import re

from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT, MAX_DAILY_LIMIT


def parse_limit(value: str | int | None, what: str) -> tuple[int | None, str | None]:
    """A sending limit: a whole number ≥ 1."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, f"Enter the {what}."
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]+", text):
        return None, f"The {what} must be a whole number of at least 1."
    n = int(text)
    if n < 1:
        return None, f"The {what} must be a whole number of at least 1."
    return n, None


def check_limits(hourly: int, daily: int) -> dict[str, str]:
    """Cross-field rules: daily ≤ 250 and hourly ≤ daily. Keys are form fields."""
    errors: dict[str, str] = {}
    if daily > MAX_DAILY_LIMIT:
        errors["daily_limit"] = (
            f"The daily limit can be at most {MAX_DAILY_LIMIT}: more than that hurts sender reputation."
        )
    if hourly > daily:
        errors["hourly_limit"] = f"The hourly limit can't be more than the daily limit ({daily})."
    return errors


def needs_approval(hourly: int, daily: int) -> bool:
    """Raising either limit above the defaults needs a manager."""
    return hourly > DEFAULT_HOURLY_LIMIT or daily > DEFAULT_DAILY_LIMIT
