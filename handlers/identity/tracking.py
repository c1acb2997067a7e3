"""The CC tracking instructions, shown in the form, after saving and in the channel."""

from __future__ import annotations

from handlers.blocks import escape


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
