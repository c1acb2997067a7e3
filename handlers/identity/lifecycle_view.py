"""What people see of an identity's life: the delete confirmation modal and the channel messages when an identity is
disabled, enabled or deleted."""

from __future__ import annotations

from slack_sdk.models.blocks import MarkdownTextObject, SectionBlock
from slack_sdk.models.views import View

from bot.services.identities.lifecycle import ADDRESS_HOLD
from bot.services.notifier import LifecycleChange, LifecycleEvent
from handlers.blocks import Message, context, escape, slack_date
from handlers.identity.ids import Lifecycle as LC
from models import Identity, IdentityStatus

HOLD_DAYS = ADDRESS_HOLD.days
DELETE_TITLE = "Delete identity"


def delete_confirmation(identity: Identity) -> View:
    """Names the address, says what deleting does, and asks."""
    text = (
        f":wastebasket: Delete *{escape(identity.display_name)}* <{escape(identity.address)}>?\n\n"
        "• Its SMTP credentials stop working at once: mail sent as it through the gateway is refused.\n"
        "• Pending checks and limit requests are closed; it disappears from `/identity list` and the Home tab.\n"
        f"• Replies to its past campaigns still arrive and are forwarded for {HOLD_DAYS} days; the address can't "
        "be used by a new identity before then.\n"
        "• Its audit trail and your team's suppression list are kept.\n\n"
        "This can't be undone."
    )
    return View(
        type="modal",
        callback_id=LC.delete_callback,
        title=DELETE_TITLE,
        submit="Delete",
        close="Cancel",
        private_metadata=str(identity.id),
        blocks=[SectionBlock(text=MarkdownTextObject(text=text))],
    )


def deleted_view(identity: Identity, event: LifecycleEvent) -> View:
    held = f" It still receives replies until {slack_date(event.held_until)}." if event.held_until else ""
    return View(
        type="modal",
        callback_id=LC.deleted_callback,
        title=DELETE_TITLE,
        close="Done",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(text=f":white_check_mark: *{escape(identity.address)}* was deleted.{held}")
            )
        ],
    )


def lifecycle_message(identity: Identity, event: LifecycleEvent) -> Message:
    """For the identity's channel."""
    who, when, address = f"<@{event.actor}>", slack_date(event.at), escape(identity.address)
    if event.change == LifecycleChange.DISABLED:
        text = (
            f":double_vertical_bar: {who} *disabled* {address} on {when}. The gateway refuses its mail until it is "
            "enabled again (`/identity enable`); replies still arrive and are forwarded."
        )
        plain = f"{identity.address} was disabled: its mail is refused until it is enabled again."
    elif event.change == LifecycleChange.ENABLED:
        text = f":arrow_forward: {who} *enabled* {address} on {when}. It sends again" + (
            "." if identity.status == IdentityStatus.READY else " once its verification steps pass."
        )
        plain = f"{identity.address} was enabled."
    else:
        held = slack_date(event.held_until) if event.held_until else "a while"
        text = (
            f":wastebasket: {who} *deleted* {address} on {when}. Its SMTP credentials were revoked. Replies to past "
            f"campaigns are still forwarded until {held}; then the address is released."
        )
        plain = f"{identity.address} was deleted."
    return Message(
        text=plain,
        blocks=[SectionBlock(text=MarkdownTextObject(text=text)), context(escape(identity.display_name))],
    )


def lifecycle_reply(identity: Identity, change: LifecycleChange, changed: bool) -> str:
    """The ephemeral answer to the person who ran the command."""
    if not changed:
        state = "already disabled" if change == LifecycleChange.DISABLED else "not disabled"
        return f"{identity.address} is {state}: nothing changed."
    if change == LifecycleChange.DISABLED:
        return (
            f":double_vertical_bar: {identity.address} is disabled: the gateway refuses its mail. Replies still arrive."
        )
    return f":arrow_forward: {identity.address} is enabled again."


def panel_retired(identity: Identity) -> Message:
    """What the verification panel of a deleted identity becomes (no buttons)."""
    return Message(
        text=f"Email identity {identity.address} was deleted.",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":wastebasket: *{escape(identity.display_name)}* <{escape(identity.address)}> was deleted."
                )
            )
        ],
    )
