"""From an accepted submission to one copy per recipient on the wire.

Every recipient gets its own copy, because each carries what belongs to that recipient alone:
- its unsubscribe link (List-Unsubscribe: the mailto: and, with PUBLIC_URL, the one-click URL; see `unsubscribe`),
  unless the message brought a List-Unsubscribe of its own;
- for platform identities, its own return path bounces+<token>@PLATFORM_DOMAIN (VERP: a bounce names the recipient
  by where it arrives) and a DKIM signature for PLATFORM_DOMAIN over exactly the bytes that are sent.
Company identities send through the customer's own server, which signs their mail; we never sign it, and their
return path stays the identity's address.

The message is serialised once (CRLF, 7-bit clean: 8bit parts become quoted-printable/base64 so no later hop
re-encodes them and breaks a signature), without Bcc, with a Message-ID and a Date added when missing. Headers are
added in front of those bytes and the signature last, after every change; the copy is sent as those bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from bot.mail.copies import Copy, CopyResult, failed
from bot.mail.dkim import DkimSigner
from bot.mail.domains import PlatformDomains, new_verp_token
from bot.services.gateway.unsubscribe import Unsubscribes
from models import Identity, IdentityKind
from models.base import utcnow

log = logging.getLogger(__name__)

WIRE_POLICY = policy.SMTP.clone(cte_type="7bit")
ONE_CLICK = "List-Unsubscribe=One-Click"

Relay = Callable[[Identity, list[Copy]], Awaitable[list[CopyResult]]]
"""(identity, copies) -> how each copy fared, in order (see bot/mail/delivery.py: Delivery.send_copies)."""


class UnreadableMessage(Exception):
    """The submitted message can't be written out again (a header the email package cannot serialise)."""


@dataclass(frozen=True)
class Dispatched:
    """What went out: the Message-ID, each recipient's result (in the order given) and return-path token."""

    message_id: str
    results: list[CopyResult]
    verp_tokens: dict[str, str]


def wire_bytes(message: EmailMessage, *, domain: str) -> tuple[bytes, str]:
    """The message as it leaves (see the module docstring) and its Message-ID. Raises UnreadableMessage."""
    del message["Bcc"]
    if message.get("Message-ID") is None:
        message["Message-ID"] = make_msgid(domain=domain)
    if message.get("Date") is None:
        message["Date"] = format_datetime(utcnow())
    try:
        wire = message.as_bytes(policy=WIRE_POLICY)
        message_id = " ".join(str(message["Message-ID"]).split())
    except Exception as exc:  # noqa: BLE001 - any failure here is the message's
        raise UnreadableMessage(type(exc).__name__) from None
    return wire, message_id


def unsubscribe_headers(mailto: str, url: str | None) -> bytes:
    """List-Unsubscribe (RFC 2369) with the one-click POST marker (RFC 8058) when there is a URL to POST to."""
    value = f"<mailto:{mailto}>" + (f", <{url}>" if url else "")
    lines = WIRE_POLICY.fold("List-Unsubscribe", value)
    if url:
        lines += WIRE_POLICY.fold("List-Unsubscribe-Post", ONE_CLICK)
    return lines.encode("ascii")


class Dispatcher:
    def __init__(
        self,
        relay: Relay,
        domains: PlatformDomains,
        *,
        unsubscribes: Unsubscribes,
        signer: DkimSigner | None = None,
        public_url: str | None = None,
    ) -> None:
        self.relay = relay
        self.domains = domains
        self.unsubscribes = unsubscribes
        self.signer = signer  # None: platform mail goes unsigned (tests that are not about signing)
        self.public_url = public_url.rstrip("/") if public_url else None

    async def send(
        self, identity: Identity, message: EmailMessage, mail_from: str, recipients: list[str]
    ) -> Dispatched:
        """Build and relay one copy per recipient. Raises UnreadableMessage before sending anything; a relay
        that raises fails every copy (it sent none)."""
        # Serialising a large message is CPU work: keep it off the event loop.
        wire, message_id = await asyncio.to_thread(wire_bytes, message, domain=self.domains.platform)
        platform = identity.kind == IdentityKind.PLATFORM
        links = None
        if "List-Unsubscribe" not in message:
            links = await self.unsubscribes.tokens_for(identity.team_id, recipients)
        verp = {r: new_verp_token() for r in recipients} if platform else {}
        copies = []
        for recipient in recipients:
            head = b"" if links is None else self._unsubscribe(links[recipient])
            sender = self.domains.return_path(verp[recipient]) if platform else mail_from
            copies.append(Copy(sender, recipient, head + wire))
        if platform and self.signer is not None:
            signed = await self.signer.sign([c.data for c in copies])
            copies = [Copy(c.sender, c.recipient, data) for c, data in zip(copies, signed, strict=True)]
        try:
            results = await self.relay(identity, copies)
        except Exception as exc:  # noqa: BLE001 - its text may quote a server or credentials: the type only
            log.warning("gateway: relay failed for %s (%s)", identity.address, type(exc).__name__)
            results = failed(copies, "the relay failed")
        return Dispatched(message_id, results, verp)

    def _unsubscribe(self, token: str) -> bytes:
        url = f"{self.public_url}/unsubscribe/{token}" if self.public_url else None
        return unsubscribe_headers(self.domains.unsubscribe_address(token), url)
