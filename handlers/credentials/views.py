"""The SMTP credentials modals. The password appears in exactly one place: the modal `credentials_view` builds, which
Slack forgets when it is closed (clear_on_close); never in a message, an ephemeral, private_metadata or a log."""

from __future__ import annotations

from slack_sdk.models.blocks import Block, DividerBlock, MarkdownTextObject, SectionBlock
from slack_sdk.models.views import View

from bot.services.gateway.access import CurrentAccess, GatewayTls, IssuedAccess
from handlers.blocks import Message, context, escape, slack_date
from handlers.credentials.ids import Credentials as C
from models import Identity

TITLE = "SMTP credentials"
TLS_WORDS = {
    GatewayTls.STARTTLS: "STARTTLS (required before logging in)",
    GatewayTls.NONE: "none (the gateway only listens on this host: use it from here)",
}


def replace_confirmation(current: CurrentAccess) -> View:
    """Issuing again revokes what the identity has: say so, name them, and ask."""
    names = "\n".join(f"• `{escape(u)}`, issued on {slack_date(at)}" for u, at in current.credentials[:10])
    text = (
        f"*{escape(current.identity.address)}* already has SMTP credentials:\n{names}\n\n"
        ":warning: Issuing new ones *revokes these at once*: mailers still using them are refused (`535`) until "
        "they are given the new username and password."
    )
    return View(
        type="modal",
        callback_id=C.confirm_callback,
        title=TITLE,
        submit="Issue new",
        close="Cancel",
        private_metadata=str(current.identity.id),
        blocks=[SectionBlock(text=MarkdownTextObject(text=text))],
    )


def credentials_view(issued: IssuedAccess) -> View:
    """The one place the password is shown."""
    e, c = issued.endpoint, issued.credential
    settings = (
        f"*Server* `{escape(e.host)}`\n*Port* `{e.port}`\n*Security* {TLS_WORDS[e.tls]}\n"
        f"*Username* `{escape(c.username)}`\n*Password* `{c.password}`"
    )
    blocks: list[Block] = [
        SectionBlock(
            text=MarkdownTextObject(
                text=f"Point your mailer at the submission gateway to send as *{escape(issued.identity.address)}*."
            )
        ),
        SectionBlock(text=MarkdownTextObject(text=settings)),
        DividerBlock(),
        SectionBlock(
            text=MarkdownTextObject(
                text=":lock: *Copy the password now.* It is shown only here, once: closing this window forgets it. "
                "If it is lost, get new credentials (these then stop working)."
            )
        ),
        context(
            f"Log in with AUTH PLAIN or LOGIN; MAIL FROM and the From header must be {escape(issued.identity.address)}."
        ),
    ]
    if issued.revoked:
        revoked = ", ".join(f"`{escape(u)}`" for u in issued.revoked[:10])
        blocks.append(context(f"Revoked: {revoked}."))
    return View(
        type="modal", callback_id=C.shown_callback, title=TITLE, close="Done", clear_on_close=True, blocks=blocks
    )


def issued_notice(identity: Identity, issued: IssuedAccess, actor: str) -> Message:
    """For the identity's channel: who issued which username (never the password), and what stopped working."""
    revoked = f" The previous credentials ({', '.join(issued.revoked[:10])}) no longer work." if issued.revoked else ""
    text = (
        f":key: <@{actor}> got new SMTP credentials for *{escape(identity.address)}* "
        f"(username `{escape(issued.credential.username)}`).{escape(revoked)}"
    )
    return Message(
        text=f"New SMTP credentials for {identity.address} (username {issued.credential.username}).{revoked}",
        blocks=[SectionBlock(text=MarkdownTextObject(text=text))],
    )
