"""Operator notices (OPS_CHANNEL): mail to the platform's postmaster@ / abuse@ mailboxes, and inbound messages set
aside after their processing failed too often."""

from __future__ import annotations

from slack_sdk.models.blocks import SectionBlock

from bot.services.notifier import OperatorEvent, OperatorNotice
from handlers.blocks import Message, context, escape, slack_date


def operator_message(notice: OperatorNotice) -> Message:
    who = escape(notice.sender or "(null sender)")
    to = escape(", ".join(notice.recipients))
    subject = escape(notice.subject or "(no subject)")
    if notice.event == OperatorEvent.OPERATOR_MAIL:
        headline = f":postbox: Mail for the operator: *{subject}* from {who} to {to}"
        note = f"Inbound message {notice.inbound_id}, {notice.size:,} bytes, stored in the database."
    else:
        headline = f":warning: Inbound message {notice.inbound_id} set aside: *{subject}* from {who} to {to}"
        note = (
            f"Processing failed {notice.attempts} times, so it is no longer retried. "
            f"Last error: {escape(notice.detail or 'unknown')}. The message is kept in the database."
        )
    text = f"{headline}\n{note}"
    return Message(text=text, blocks=[SectionBlock(text=headline), context(f"{note} {slack_date(notice.at)}")])
