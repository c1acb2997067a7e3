"""Channel and ephemeral messages about identities: details, list, help."""

from __future__ import annotations

from datetime import datetime

from slack_sdk.models.blocks import Block, HeaderBlock, MarkdownTextObject, SectionBlock

from handlers.blocks import STATUS_LABELS, Message, context, escape, limits_text, slack_date
from handlers.details import identity_details
from handlers.identity.ids import COMMAND
from models import Identity, LimitRequest

MAX_LISTED = 40


def identity_created(identity: Identity, request: LimitRequest | None) -> Message:
    status = STATUS_LABELS.get(identity.status, identity.status)
    return Message(
        text=f"New email identity {identity.display_name} <{identity.address}> created. Status: {status}.",
        blocks=[
            HeaderBlock(text=f"New email identity: {identity.display_name}"[:150]),
            *identity_details(identity, request),
            context(f"Created by <@{identity.created_by}> on {slack_date(identity.created_at)}"),
            context(
                "Next: run the three verification steps (Sending, Receiving, Tracking) "
                f"before sending with this identity. `{COMMAND} help` lists the commands."
            ),
        ],
    )


def identity_list(identities: list[Identity]) -> Message:
    if not identities:
        return Message(
            text="No email identities yet.",
            blocks=[
                SectionBlock(
                    text=MarkdownTextObject(
                        text=f"No email identities in this workspace yet. Create one with `{COMMAND} new`."
                    )
                )
            ],
        )
    lines = [
        f"• *{escape(i.display_name)}* <{escape(i.address)}> — {STATUS_LABELS.get(i.status, i.status)} · "
        f"{limits_text(i.hourly_limit, i.daily_limit)}"
        for i in identities[:MAX_LISTED]
    ]
    blocks: list[Block] = [HeaderBlock(text=f"Email identities ({len(identities)})")]
    # A section holds at most 3000 characters: chunk the lines.
    chunk: list[str] = []
    for line in lines:
        if sum(len(x) + 1 for x in chunk) + len(line) > 2900:
            blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(chunk))))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(chunk))))
    if len(identities) > MAX_LISTED:
        blocks.append(context(f"…and {len(identities) - MAX_LISTED} more."))
    return Message(text=f"{len(identities)} email identities.", blocks=blocks)


HELP_LINES = [
    (f"`{COMMAND} new`", "create an email identity (sender name, address, limits, response forwarding)"),
    (f"`{COMMAND} list`", "the identities in this workspace and their status"),
    (f"`{COMMAND} edit <address>`", "change an identity's names, forwarding address or SMTP settings"),
    (f"`{COMMAND} verify <address>`", "post the three verification steps (Sending, Receiving, Tracking)"),
    (f"`{COMMAND} show <address>`", "details, sending usage against the limits, and verification status"),
    (f"`{COMMAND} limits <address>`", "change the sending limits (raising them above the defaults needs a manager)"),
    (f"`{COMMAND} disable <address>`", "stop an identity's sending (replies still arrive); `enable` undoes it"),
    (f"`{COMMAND} enable <address>`", "let a disabled identity send again"),
    (f"`{COMMAND} delete <address>`", "delete an identity (asks first; its address stays reserved for 30 days)"),
    (f"`{COMMAND} help`", "this message"),
]


def help_message(problem: str | None = None) -> Message:
    text = "\n".join(f"{cmd} — {what}" for cmd, what in HELP_LINES)
    blocks: list[Block] = []
    if problem:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f":warning: {escape(problem)}")))
    blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*Identity Bot commands*\n{text}")))
    blocks.append(
        context(
            "Identities are the sender name and address your emails go out as. "
            "Each one passes three verification steps before it is ready to use."
        )
    )
    names = ", ".join(cmd.strip("`").split(" ")[1] for cmd, _ in HELP_LINES)
    return Message(text=(f"{problem} " if problem else "") + f"Identity Bot commands: {names}.", blocks=blocks)


def identity_updated(identity: Identity, changed: list[str], actor: str, when: datetime) -> Message:
    labels = {
        "display_name": "display name",
        "company_name": "company name",
        "forwarding_address": "response forwarding address",
        "notices_channel": "notices channel",
        "esp_provider": "email service provider",
        "smtp_host": "SMTP server",
        "smtp_port": "SMTP port",
        "smtp_security": "SMTP security",
        "smtp_username": "SMTP username",
        "password": "SMTP password",
        "sign_in": "sign-in (Microsoft/Google)",
    }
    what = ", ".join(labels.get(c, c) for c in changed) or "nothing"
    return Message(
        text=f"Email identity {identity.address} updated: {what}.",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text=f":pencil2: *{escape(identity.display_name)}* <{escape(identity.address)}> was updated by "
                    f"<@{actor}> on {slack_date(when)}.\nChanged: {what}."
                )
            ),
            *identity_details(identity, None),
        ],
    )


def problem_message(problem: str) -> Message:
    return Message(text=problem, blocks=[SectionBlock(text=MarkdownTextObject(text=f":warning: {escape(problem)}"))])
