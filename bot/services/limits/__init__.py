"""Sending limits changed by people: lowering applies at once, raising above the defaults waits for a manager,
who decides each request exactly once."""

from bot.services.limits.service import AlreadyDecided, ChangeOutcome, Decision, LimitChange, LimitService

__all__ = ["AlreadyDecided", "ChangeOutcome", "Decision", "LimitChange", "LimitService"]
