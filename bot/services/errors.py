"""Errors that services raise and handlers turn into messages a person can act on."""

from __future__ import annotations


class FormErrors(Exception):
    """Input that cannot be accepted, by form field name -> message. Nothing was stored."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class NotFound(Exception):
    """The thing asked for does not exist (or is not visible to this workspace)."""


class NotAllowed(Exception):
    """The user may not do this; str() says why in a sentence fit for Slack."""
