"""How mail leaves: as an identity (its own SMTP server, or the platform relay) and from the platform itself.

Addresses on our own domains are handed to our inbound server over SMTP, like any other sender would. Other
recipients go through RELAY_SMTP_URL; without one ("local delivery") the message is written to DATA_DIR/outbox
so nothing is lost and an operator can see what would have gone out."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from bot.mail.domains import PlatformDomains
from bot.mail.outbound import MailSender, SmtpServer

log = logging.getLogger(__name__)


InboundAddress = Callable[[], "tuple[str, int] | None"]
"""Where our inbound server listens, once it has started (None before)."""


class Delivery:
    def __init__(
        self,
        mail: MailSender,
        *,
        relay: SmtpServer | None,
        domains: PlatformDomains,
        inbound: InboundAddress,
        outbox: Path,
    ) -> None:
        self.mail = mail
        self.relay = relay  # the platform relay (RELAY_SMTP_URL), trusted; None: write to the outbox
        self.domains = domains
        self.inbound = inbound  # where our inbound server listens (known once it has started)
        self.outbox = outbox

    def _is_own(self, address: str) -> bool:
        return self.domains.is_own(address)

    async def send_as(
        self, server: SmtpServer | None, message: EmailMessage, *, sender: str, recipients: list[str]
    ) -> str:
        """Send as an identity: through its own server when it has one (customer hosts pass the SSRF guard),
        else like the platform. Returns a short description of the route for the channel history."""
        if server is not None:
            await self.mail.send(server, message, sender=sender, recipients=recipients)
            return f"accepted by {server.host}:{server.port}"
        return await self.send_from_platform(message, sender=sender, recipients=recipients)

    async def send_from_platform(self, message: EmailMessage | bytes, *, sender: str, recipients: list[str]) -> str:
        own = [r for r in recipients if self._is_own(r)]
        other = [r for r in recipients if not self._is_own(r)]
        routes: list[str] = []
        if own:
            where = self.inbound()
            if where is None:
                raise RuntimeError("the inbound server is not running")
            host, port = where
            await self.mail.send(SmtpServer(host, port, "none"), message, sender=sender, recipients=own, trusted=True)
            routes.append("delivered to the platform's inbound server")
        if other:
            if self.relay is not None:
                await self.mail.send(self.relay, message, sender=sender, recipients=other, trusted=True)
                routes.append(f"accepted by the platform relay {self.relay.host}:{self.relay.port}")
            else:
                path = self._to_outbox(message, sender, other)
                routes.append(f"stored in the local outbox ({path.name}); set RELAY_SMTP_URL to deliver")
        return "; ".join(routes)

    def _to_outbox(self, message: EmailMessage | bytes, sender: str, recipients: list[str]) -> Path:
        self.outbox.mkdir(parents=True, exist_ok=True)
        path = self.outbox / f"{int(time.time())}-{uuid.uuid4().hex[:8]}.eml"
        envelope = f"X-Envelope-From: {sender}\nX-Envelope-To: {', '.join(recipients)}\n"
        path.write_bytes(envelope.encode() + (message if isinstance(message, bytes) else message.as_bytes()))
        log.info("no RELAY_SMTP_URL: message for %d recipient(s) written to %s", len(recipients), path)
        return path
