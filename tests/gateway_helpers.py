"""Helpers for the sending-limit and gateway tests, and a small command line used to run gateways and SMTP clients
in separate OS processes (cross-process atomicity is only proven with several processes):

    python -m tests.gateway_helpers serve <database_url>
        Runs a SubmissionGateway on 127.0.0.1 with a relay that accepts without any network. Prints
        "listening <port>" when ready; stops when its standard input closes, then prints "relayed <n>".
    python -m tests.gateway_helpers send <port> <username> <password> <from> <to> <count>
        Prints "ready", waits for a line on standard input (the start signal, so all clients burst together),
        sends <count> messages, each over a fresh connection, and prints one JSON list of [code, text] replies.

Heavy imports stay inside functions so that client processes start fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email.message import EmailMessage

    from models import Database, Identity


async def make_identity(
    db: Database,
    address: str,
    *,
    hourly: int = 40,
    daily: int = 200,
    ready: bool = True,
    team_id: str = "T0TEST",
) -> Identity:
    """An identity as the verification flow leaves it (ready) or before it (not verified)."""
    from models import Identity, IdentityKind, IdentityStatus

    local = address.split("@", 1)[0]
    async with db.transaction() as session:
        identity = Identity(
            team_id=team_id,
            kind=IdentityKind.PLATFORM.value,
            display_name=local.title(),
            company_name="Acme Inc.",
            address=address,
            hourly_limit=hourly,
            daily_limit=daily,
            forwarding_address="leads@acme.example.com",
            notices_channel="C_TEAM",
            created_by="U_LEAD",
            status=(IdentityStatus.READY if ready else IdentityStatus.NOT_VERIFIED).value,
        )
        session.add(identity)
    return identity


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 13, 4, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@dataclass
class RecordingRelay:
    """A relay that records what it was given; `fail_next` makes the next calls raise, like a server refusing."""

    sent: list[tuple[str, str, list[str], str]] = field(default_factory=list)
    fail_next: int = 0
    error: Callable[[], Exception] = lambda: ConnectionError("upstream said: 535 password=hunter2")

    async def __call__(self, identity: Identity, message: EmailMessage, mail_from: str, rcpt_tos: list[str]) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise self.error()
        self.sent.append((identity.address, mail_from, list(rcpt_tos), str(message["Subject"])))


def message_bytes(sender: str, to: str, subject: str = "Hello", size: int = 0) -> bytes:
    body = "Hi there,\r\n" + ("x" * 70 + "\r\n") * (size // 72)
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@test>\r\n"
        f"\r\n{body}"
    ).encode()


# --- the command line: processes for the cross-process test ---


async def _serve(database_url: str) -> int:
    import asyncio

    from bot.services.gateway import GatewayCredentials, Submission
    from bot.services.gateway.window import SendingLimits
    from bot.smtp.gateway import SubmissionGateway
    from models import Database

    relayed = 0

    async def accept(identity: Identity, message: EmailMessage, mail_from: str, rcpt_tos: list[str]) -> None:
        nonlocal relayed
        relayed += 1

    db = Database(database_url)
    gateway = SubmissionGateway(Submission(db, GatewayCredentials(db), SendingLimits(db), accept))
    await gateway.start("127.0.0.1", 0)
    print(f"listening {gateway.port}", flush=True)
    loop = asyncio.get_running_loop()
    # Lifetime tied to the parent's pipe: when the test ends (or dies) standard input closes and we stop.
    await loop.run_in_executor(None, sys.stdin.read)
    await gateway.stop()
    await db.dispose()
    print(f"relayed {relayed}", flush=True)
    return 0


def _send(port: int, username: str, password: str, sender: str, to: str, count: int) -> list[tuple[int, str]]:
    import smtplib

    replies: list[tuple[int, str]] = []
    for i in range(count):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo()
            client.login(username, password)
            client.mail(sender)
            client.rcpt(to)
            code, text = client.data(message_bytes(sender, to, subject=f"burst {port} {i}"))
            replies.append((code, text.decode()))
    return replies


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "serve":
        import asyncio

        return asyncio.run(_serve(argv[1]))
    if command == "send":
        port, username, password, sender, to, count = argv[1:7]
        print("ready", flush=True)
        sys.stdin.readline()
        print(json.dumps(_send(int(port), username, password, sender, to, int(count))), flush=True)
        return 0
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
