"""Rules for sending limits: whole numbers of at least 1, the daily limit at most 250, hourly within daily, and
what needs a manager's approval. Each check returns a message a person can act on."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

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


def parse_limits(hourly_text: str | int | None, daily_text: str | int | None) -> tuple[int, int, dict[str, str]]:
    """Both limits from a form: (hourly, daily, errors by field). The numbers are meaningful only without errors."""
    errors: dict[str, str] = {}
    hourly, err = parse_limit(hourly_text, "hourly limit")
    if err:
        errors["hourly_limit"] = err
    daily, err = parse_limit(daily_text, "daily limit")
    if err:
        errors["daily_limit"] = err
    if hourly is not None and daily is not None:
        for name, message in check_limits(hourly, daily).items():
            errors.setdefault(name, message)
    return hourly or 0, daily or 0, errors


MAX_TIME_BOX_DAYS = 90


def parse_until(value: str | None, today: date) -> tuple[datetime | None, str | None]:
    """The optional end of a time-boxed increase: a date (YYYY-MM-DD, as Slack's date picker sends it) after today
    and at most MAX_TIME_BOX_DAYS ahead. The increase lasts through that day (UTC): it ends at the next midnight."""
    if value is None or not str(value).strip():
        return None, None
    try:
        day = date.fromisoformat(str(value).strip())
    except ValueError:
        return None, "Pick the last day of the increase."
    if day <= today:
        return None, "Pick a day after today (or leave it empty for a permanent increase)."
    if day > today + timedelta(days=MAX_TIME_BOX_DAYS):
        last = today + timedelta(days=MAX_TIME_BOX_DAYS)
        return None, f"An increase can last at most {MAX_TIME_BOX_DAYS} days: pick {last.isoformat()} or earlier."
    return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=UTC), None
