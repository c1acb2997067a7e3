"""Small pieces every message uses."""

from __future__ import annotations

from datetime import UTC, datetime

from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject, SectionBlock
from slack_sdk.models.views import View

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


def loading_view(title: str) -> View:
    """Shown the moment a modal is asked for (a trigger id lives ~3 s); replaced once the data is loaded."""
    return View(
        type="modal",
        title=title,
        close="Close",
        blocks=[SectionBlock(text=MarkdownTextObject(text=":hourglass_flowing_sand: Loading…"))],
    )


def problem_view(title: str, problem: str) -> View:
    """A modal that can only say why it can't go on."""
    return View(
        type="modal",
        title=title,
        close="Close",
        blocks=[SectionBlock(text=MarkdownTextObject(text=f":warning: {escape(problem)}"))],
    )
