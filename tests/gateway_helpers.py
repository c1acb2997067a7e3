"""Helpers for the sending-limit and gateway tests, and a small command line used to run gateways and SMTP clients
in separate OS processes (cross-process atomicity is only proven with several processes):

    python -m tests.gateway_helpers serve <database_url>
        Runs a SubmissionGateway on 127.0.0.1 with a relay that accepts without any network. Prints
        "listening <port>" when ready; stops when its standard input closes, then prints "relayed <n>".
    python -m tests.gateway_helpers send <port> <username> <password> <from> <to> <count> <recipients>
        Prints "ready", waits for a line on standard input (the start signal, so all clients burst together),
        sends <count> messages to <recipients> recipients each (<to> with +1, +2, ... tags), each over a fresh
        connection, and prints one JSON list of [code, text] replies: one per RCPT, then DATA's (when a RCPT was
        accepted).

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
    from bot.mail.copies import Copy, CopyResult
    from bot.services.gateway import Submission
    from bot.services.secrets import SecretBox
    from models import Database, Identity

# The secret key of every test gateway (a fixed Fernet key, so gateway processes check what the test issued).
TEST_SECRET_KEY = "q9nUnfWSXdbWQ6Xc2bRBjvwjOhDB31ym3PHsXpaxmS8="
TEST_PLATFORM_DOMAIN = "platform.example.com"


def secret_box() -> SecretBox:
    from bot.services.secrets import SecretBox

    return SecretBox([TEST_SECRET_KEY])


def make_submission(
    db: Database,
    relay: object,
    *,
    clock: Callable[[], datetime] | None = None,
    limits: object = None,
    signer: object = None,
    public_url: str | None = None,
    reports: object = None,
) -> Submission:
    """The gateway's services as the composition root wires them, with `relay` in place of real delivery."""
    from bot.mail.domains import PlatformDomains
    from bot.services.gateway import Dispatcher, GatewayCredentials, SendingLimits, Submission, Unsubscribes

    window = limits if limits is not None else SendingLimits(db, clock=clock) if clock else SendingLimits(db)
    dispatcher = Dispatcher(
        relay,  # type: ignore[arg-type]
        PlatformDomains(TEST_PLATFORM_DOMAIN, TEST_PLATFORM_DOMAIN),
        unsubscribes=Unsubscribes(db),
        signer=signer,  # type: ignore[arg-type]
        public_url=public_url,
    )
    return Submission(db, GatewayCredentials(db, secret_box()), window, dispatcher, reports=reports)  # type: ignore[arg-type]


async def make_identity(
    db: Database,
    address: str,
    *,
    hourly: int = 40,
    daily: int = 200,
    ready: bool = True,
    team_id: str = "T0TEST",
    kind: str = "platform",
) -> Identity:
    """An identity as the verification flow leaves it (ready) or before it (not verified)."""
    from models import Identity, IdentityKind, IdentityStatus

    local = address.split("@", 1)[0]
    async with db.transaction() as session:
        identity = Identity(
            team_id=team_id,
            kind=IdentityKind(kind).value,
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
    """A relay that records what it was given and accepts every copy, but: `fail_next` makes the next calls raise
    (like a server that can't be reached) and `refuse` refuses the copies of these recipients with (code, text)."""

    sent: list[tuple[str, list[str], list[str], str]] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    fail_next: int = 0
    refuse: dict[str, tuple[int, str]] = field(default_factory=dict)
    error: Callable[[], Exception] = lambda: ConnectionError("upstream said: 535 password=hunter2")

    async def __call__(self, identity: Identity, copies: list[Copy]) -> list[CopyResult]:
        from email import message_from_bytes

        from bot.mail.copies import CopyResult, CopyStatus

        if self.fail_next > 0:
            self.fail_next -= 1
            raise self.error()
        results = []
        for copy in copies:
            if copy.recipient in self.refuse:
                code, text = self.refuse[copy.recipient]
                results.append(CopyResult(copy.recipient, CopyStatus.REFUSED, code, text))
            else:
                results.append(CopyResult(copy.recipient, CopyStatus.ACCEPTED, 250))
                self.copies.append(copy)
        accepted = [c for c, r in zip(copies, results, strict=True) if r.status == CopyStatus.ACCEPTED]
        if accepted:
            subject = str(message_from_bytes(accepted[0].data)["Subject"])
            self.sent.append((identity.address, [c.sender for c in accepted], [c.recipient for c in accepted], subject))
        return results


def message_bytes(sender: str, to: str, subject: str = "Hello", size: int = 0) -> bytes:
    body = "Hi there,\r\n" + ("x" * 70 + "\r\n") * (size // 72)
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@test>\r\n"
        f"\r\n{body}"
    ).encode()


# --- the command line: processes for the cross-process test ---


async def _serve(database_url: str) -> int:
    import asyncio

    from bot.mail.copies import CopyResult, CopyStatus
    from bot.smtp.gateway import SubmissionGateway
    from models import Database

    relayed = 0

    async def accept(identity: Identity, copies: list[Copy]) -> list[CopyResult]:
        nonlocal relayed
        relayed += len(copies)
        return [CopyResult(c.recipient, CopyStatus.ACCEPTED, 250) for c in copies]

    db = Database(database_url)
    gateway = SubmissionGateway(make_submission(db, accept))
    await gateway.start("127.0.0.1", 0)
    print(f"listening {gateway.port}", flush=True)
    loop = asyncio.get_running_loop()
    # Lifetime tied to the parent's pipe: when the test ends (or dies) standard input closes and we stop.
    await loop.run_in_executor(None, sys.stdin.read)
    await gateway.stop()
    await db.dispose()
    print(f"relayed {relayed}", flush=True)
    return 0


def _send(
    port: int, username: str, password: str, sender: str, to: str, count: int, recipients: int
) -> list[tuple[int, str]]:
    import smtplib

    local, _, domain = to.partition("@")
    replies: list[tuple[int, str]] = []
    for i in range(count):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo()
            client.login(username, password)
            client.mail(sender)
            accepted = 0
            for n in range(recipients):
                code, text = client.rcpt(f"{local}+{i}.{n}@{domain}")
                replies.append((code, text.decode()))
                accepted += code == 250
            if accepted:
                code, text = client.data(message_bytes(sender, to, subject=f"burst {port} {i}"))
                replies.append((code, text.decode()))
    return replies


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "serve":
        import asyncio

        return asyncio.run(_serve(argv[1]))
    if command == "send":
        port, username, password, sender, to, count, recipients = argv[1:8]
        print("ready", flush=True)
        sys.stdin.readline()
        replies = _send(int(port), username, password, sender, to, int(count), int(recipients))
        print(json.dumps(replies), flush=True)
        return 0
    print(f"unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
