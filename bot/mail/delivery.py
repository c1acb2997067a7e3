"""How mail leaves: as an identity (its own SMTP server, or the platform relay) and from the platform itself.

Addresses on our own domains are handed to our inbound server over SMTP, like any other sender would. Other
recipients go through RELAY_SMTP_URL; without one ("local delivery") the message is written to DATA_DIR/outbox
so nothing is lost and an operator can see what would have gone out."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from bot.mail.copies import Copy, CopyResult, CopyStatus, failed, refused
from bot.mail.domains import PlatformDomains
from bot.mail.outbound import MailSender, SmtpFailure, SmtpServer
from bot.mail.sign_in_diagnosis import SIGN_IN_AGAIN, SMTP_AUTH_DISABLED

log = logging.getLogger(__name__)

# Failures to open a session that only a person can mend: a refused password, a revoked sign-in, SMTP AUTH turned
# off for the mailbox. The gateway then refuses for good (5xx) with the fix, instead of asking for retries.
NEEDS_A_PERSON = frozenset({"auth_failed", "app_password_required", SIGN_IN_AGAIN, SMTP_AUTH_DISABLED})


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

    async def send_copies(self, server: SmtpServer | None, copies: list[Copy]) -> list[CopyResult]:
        """Relay one copy per recipient (see bot/mail/copies.py), in the order given: through the identity's own
        server when it has one, else like the platform (our own addresses to our inbound server, others through
        the platform relay or into the outbox). Never raises for mail problems: each copy says how it fared."""
        if server is not None:
            return await self._copies_via(server, copies, trusted=False)
        results: dict[int, CopyResult] = {}
        own = [i for i, c in enumerate(copies) if self._is_own(c.recipient)]
        other = [i for i, c in enumerate(copies) if not self._is_own(c.recipient)]
        if own:
            where = self.inbound()
            own_copies = [copies[i] for i in own]
            if where is None:
                done = failed(own_copies, "the platform's inbound server is not running")
            else:
                done = await self._copies_via(SmtpServer(where[0], where[1], "none"), own_copies, trusted=True)
            results.update(zip(own, done, strict=True))
        if other:
            other_copies = [copies[i] for i in other]
            if self.relay is not None:
                done = await self._copies_via(self.relay, other_copies, trusted=True)
            else:
                done = [self._copy_to_outbox(c) for c in other_copies]
            results.update(zip(other, done, strict=True))
        return [results[i] for i in range(len(copies))]

    async def _copies_via(self, server: SmtpServer, copies: list[Copy], *, trusted: bool) -> list[CopyResult]:
        try:
            return await self.mail.send_copies(server, copies, trusted=trusted)
        except SmtpFailure as exc:
            # Logged by the client with its diagnosis; the copies only say that none of them got through.
            if exc.diagnosis.code in NEEDS_A_PERSON:
                # Retrying can't help until someone signs in again or types the new password: say so for good (a
                # mailer would otherwise retry a 451 for days), with the fix.
                return refused(copies, f"{exc.diagnosis.problem} {exc.diagnosis.fix}", code=554)
            return failed(copies, f"could not send through {server.host}:{server.port} ({exc.diagnosis.code})")

    def _copy_to_outbox(self, copy: Copy) -> CopyResult:
        envelope = f"X-Envelope-From: {copy.sender}\r\nX-Envelope-To: {copy.recipient}\r\n"
        path = self._write_outbox(envelope.encode() + copy.data)
        log.info("no RELAY_SMTP_URL: a copy for 1 recipient written to %s", path)
        return CopyResult(copy.recipient, CopyStatus.ACCEPTED, 250, "stored in the local outbox")

    def _to_outbox(self, message: EmailMessage | bytes, sender: str, recipients: list[str]) -> Path:
        envelope = f"X-Envelope-From: {sender}\nX-Envelope-To: {', '.join(recipients)}\n"
        data = message if isinstance(message, bytes) else message.as_bytes()
        path = self._write_outbox(envelope.encode() + data)
        log.info("no RELAY_SMTP_URL: message for %d recipient(s) written to %s", len(recipients), path)
        return path

    def _write_outbox(self, data: bytes) -> Path:
        """Mode 0700 directory, 0600 files: outbox mail holds one-time passwords and leads."""
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.outbox / f"{int(time.time())}-{uuid.uuid4().hex[:8]}.eml"
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        return path
