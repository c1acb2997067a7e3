"""The identity's details as every feature shows them (panel, /identity show, the form's saved view), with the CC
tracking instructions: one rendering, used by the identity, verification and limits views."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, MarkdownTextObject, SectionBlock

from bot.services.identities.providers import SECURITY_LABELS
from handlers.blocks import KIND_LABELS, escape, limits_text, status_label
from models import Identity, IdentityKind, LimitRequest, LimitRequestStatus


def identity_details(identity: Identity, request: LimitRequest | None) -> list[Block]:
    limits = limits_text(identity.hourly_limit, identity.daily_limit)
    if request is not None and request.status == LimitRequestStatus.PENDING:
        limits += (
            f"\n_Increase to {limits_text(request.requested_hourly, request.requested_daily)} "
            "requested — waiting for a manager._"
        )
    fields = [
        MarkdownTextObject(text=f"*Display name*\n{escape(identity.display_name)}"),
        MarkdownTextObject(text=f"*Company*\n{escape(identity.company_name)}"),
        MarkdownTextObject(text=f"*Email address*\n{escape(identity.address)}"),
        MarkdownTextObject(text=f"*Kind*\n{KIND_LABELS.get(identity.kind, identity.kind)}"),
        MarkdownTextObject(text=f"*Sending limits*\n{limits}"),
        MarkdownTextObject(text=f"*Responses forwarded to*\n{escape(identity.forwarding_address)}"),
        MarkdownTextObject(text=f"*Status*\n{status_label(identity)}"),
    ]
    if identity.kind == IdentityKind.COMPANY:
        security = SECURITY_LABELS.get(identity.smtp_security or "", identity.smtp_security or "")
        fields.append(
            MarkdownTextObject(
                text=f"*SMTP server*\n{escape(identity.smtp_host or '')}:{identity.smtp_port} · "
                f"{security.split(' (')[0]}"
            )
        )
    blocks: list[Block] = [SectionBlock(fields=fields)]
    if identity.tracking_address:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=tracking_instructions(identity.tracking_address))))
    return blocks


def tracking_instructions(tracking_address: str | None) -> str:
    address = f"`{escape(tracking_address)}`" if tracking_address else "(shown once the form knows it)"
    return (
        f"*CC tracking address:* {address}\n"
        "Add it as a forwarder in your mailbox so replies to your campaigns reach us too: that is how leads and "
        "unsubscribe requests are tracked for this identity.\n"
        "• *Google Workspace / Gmail:* Settings → See all settings → Forwarding and POP/IMAP → "
        "*Add a forwarding address* → paste the address → confirm → *Forward a copy of incoming mail*.\n"
        "• *Microsoft 365 / Outlook:* Settings → Mail → *Forwarding* → Enable forwarding → paste the address → "
        "tick *Keep a copy of forwarded messages* → Save (or an inbox rule: *Forward to* this address)."
    )
