"""Block Kit pieces every feature uses: the Message a listener or notifier sends, date tokens, escaping, input
ids, loading and problem modals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, MarkdownTextObject, SectionBlock
from slack_sdk.models.views import View

from bot.services.policy import IdentityAction, NotPermitted
from models import Identity, IdentityHealth, IdentityKind, IdentityLifecycle, IdentityStatus

STATUS_LABELS: dict[str, str] = {IdentityStatus.NOT_VERIFIED: "Not verified", IdentityStatus.READY: "Ready to use"}
KIND_LABELS: dict[str, str] = {IdentityKind.PLATFORM: "Platform domain", IdentityKind.COMPANY: "Company domain"}


def status_label(identity: Identity) -> str:
    """One word for where an identity stands, the most pressing first: disabled, paused, needs attention, ready,
    not verified (the App Home, the panel)."""
    if identity.lifecycle == IdentityLifecycle.DISABLED:
        return ":double_vertical_bar: Disabled"
    if identity.health == IdentityHealth.PAUSED:
        return ":red_circle: Paused"
    if identity.health == IdentityHealth.NEEDS_ATTENTION:
        return ":large_yellow_circle: Needs attention"
    if identity.status == IdentityStatus.READY:
        return ":white_check_mark: Ready to use"
    return ":white_circle: Not verified"


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


RECIPIENTS_HINT = "Emails (recipients): a message to three people counts three."


def limits_text(hourly: int, daily: int) -> str:
    """Limits count recipients: a message to three people is three emails."""
    return f"{hourly} emails (recipients) per hour · {daily} per day"


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


# What only an identity's creator and managers may do, as "Only <@creator> or a manager can …" finishes it.
ACTION_WORDS = {
    IdentityAction.RUN_STEPS: "run the verification steps of",
    IdentityAction.SEND_CODE: "ask for one-time passwords for",
    IdentityAction.ENTER_CODE: "enter one-time passwords for",
    IdentityAction.EDIT: "edit",
    IdentityAction.CHANGE_LIMITS: "change the limits of",
    IdentityAction.RERUN_CHECKS: "re-run the health checks of",
    IdentityAction.RESUME: "resume",
    IdentityAction.DISABLE: "disable or enable",
    IdentityAction.DELETE: "delete",
    IdentityAction.CREDENTIALS: "get SMTP credentials for",
}


def not_permitted_text(refusal: NotPermitted) -> str:
    """The answer to someone who may only look: who can do it instead (mrkdwn; mentions render)."""
    who = "a manager" if refusal.managers_only else f"<@{refusal.creator}> or a manager"
    return f":no_entry: Only {who} can {ACTION_WORDS[refusal.action]} {escape(refusal.address)}. Nothing was changed."


def refused_view(title: str, refusal: NotPermitted) -> View:
    """A modal that says who may do this instead (nothing to submit)."""
    return View(
        type="modal",
        title=title,
        close="Close",
        blocks=[SectionBlock(text=MarkdownTextObject(text=not_permitted_text(refusal)))],
    )


@dataclass
class Message:
    """A message ready for chat.postMessage / chat.update / an ack: top-level text plus blocks."""

    text: str
    blocks: list[Block]

    def as_kwargs(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": [b.to_dict() for b in self.blocks]}


# The action_id of every plain input element: forms read values by block_id (see handlers/state.py).
INPUT_ACTION = "value"


def versioned(block_id: str, version: int) -> str:
    """A block_id that changes when the app must replace what the user typed (Slack keeps typed values
    for as long as block_id and action_id stay the same)."""
    return block_id if version <= 1 else f"{block_id}#{version}"


def base_block_id(block_id: str) -> str:
    return block_id.split("#", 1)[0]
