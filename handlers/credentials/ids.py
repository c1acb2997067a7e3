"""The credentials feature's ids: Get SMTP credentials (panel and Home tab) and its modals. Each string is typed
once."""

from __future__ import annotations

from enum import StrEnum


class Credentials(StrEnum):
    open = "credentials-open"  # "Get SMTP credentials"
    confirm_callback = "credentials-replace"  # "Issue new" after saying the current ones stop working
    shown_callback = "credentials-shown"
