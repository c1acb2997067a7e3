"""Small pieces every message uses."""

from __future__ import annotations

from datetime import UTC, datetime

from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject

from models import IdentityKind, IdentityStatus

STATUS_LABELS = {
    IdentityStatus.NOT_VERIFIED.value: "Not verified",
    IdentityStatus.READY.value: "Ready to use",
}
KIND_LABELS = {IdentityKind.PLATFORM.value: "Platform domain", IdentityKind.COMPANY.value: "Company domain"}


def slack_date(when: datetime) -> str:
    """A Slack date token: each reader sees their own time zone; the fallback is absolute UTC."""
    when = when.astimezone(UTC)
    fallback = when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def escape(text: str) -> str:
    """Escape user text for mrkdwn (Slack's three control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def context(text: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=text)])


def limits_text(hourly: int, daily: int) -> str:
    return f"{hourly} per hour · {daily} per day"
