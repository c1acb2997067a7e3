"""The incoming-mail pipeline on stored rows, on SQLite and PostgreSQL: each message acted on exactly once."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from sqlalchemy import select, text

from bot.mail.domains import PlatformDomains
from bot.mail.messages import FORWARDED_HEADER
from bot.services.incoming import InboundStore, IncomingMail
from bot.services.incoming.rules import classify
from bot.services.incoming.store import dedup_key, message_id_of
from models import (
    AuditEvent,
    Database,
    Identity,
    IdentityKind,
    InboundMessage,
    MessageKind,
    Suppression,
    SuppressionReason,
)
from models.base import utcnow
from tests.sent_mail import record_sent
from tests.test_classifier import (
    GMAIL_FORWARDED_TOKEN_IN_BODY,
    PLEASE_REMOVE_ME,
    POSTFIX_DSN_5XX,
    TOKEN,
    VACATION_AUTO_SUBMITTED,
)

PLATFORM_DOMAINS = ("platform.example.com", "track.example.com")
DOMAINS = PlatformDomains(*PLATFORM_DOMAINS)
IDENTITY_ADDRESS = "jane.doe@platform.example.com"
TRACKING_ADDRESS = "cc-0123456789abcdef0123@track.example.com"
FORWARDING_ADDRESS = "jane@acme.example.com"

LEAD_REPLY = (
    b"From: Sam Lead <sam@customer.example.org>\r\n"
    b"To: Jane Doe <jane.doe@platform.example.com>\r\n"
    b"Subject: Re: Quick question about your Q3 plans\r\n"
    b"Message-ID: <lead-1@customer.example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Sounds interesting. Could we talk on Tuesday at 3pm?\r\n"
    b"\r\n"
    b"On Tue, Jan 9, 2024 at 10:00 AM Jane Doe <jane.doe@platform.example.com> wrote:\r\n"
    b"> Would you have 15 minutes next week? Reply unsubscribe to stop.\r\n"
)


@dataclass
class Calls:
    """Records what the pipeline handed to its collaborators (the real ones send mail / verify steps)."""

    forwards: list[tuple[int, EmailMessage]] = field(default_factory=list)
    tokens: list[tuple[list[str], int]] = field(default_factory=list)
    fail_forwards: int = 0

    async def forward(self, identity: Identity, message: bytes) -> None:
        if self.fail_forwards:
            self.fail_forwards -= 1
            raise ConnectionError("relay unavailable")
        parsed = BytesParser(policy=policy.default).parsebytes(message)
        self.forwards.append((identity.id, parsed))  # type: ignore[arg-type]

    async def on_tokens(self, tokens: list[str], message_id: int) -> None:
        self.tokens.append((tokens, message_id))


def pipeline(db: Database, calls: Calls, **options: object) -> IncomingMail:
    """The pipeline, retrying at once (no backoff) unless told otherwise."""
    options.setdefault("retry_delays", (0.0, 0.0, 0.0))
    return IncomingMail(db, DOMAINS, on_tokens=calls.on_tokens, forward=calls.forward, **options)  # type: ignore[arg-type]


@pytest.fixture
async def identity(db: Database) -> Identity:
    async with db.transaction() as session:
        row = Identity(
            team_id="T0TEST",
            kind=IdentityKind.PLATFORM,
            display_name="Jane Doe",
            company_name="Acme Inc.",
            address=IDENTITY_ADDRESS,
            forwarding_address=FORWARDING_ADDRESS,
            notices_channel="C_TEAM",
            created_by="U_LEAD",
            tracking_address=TRACKING_ADDRESS,
        )
        session.add(row)
    return row


async def store(db: Database, raw: bytes, rcpt_tos: list[str], *, mail_from: str = "sam@customer.example.org") -> int:
    """What the inbound server commits before answering 250 (inserted directly: no processor is running)."""
    message_id = message_id_of(raw)
    async with db.transaction() as session:
        row = InboundMessage(
            peer="192.0.2.1",
            mail_from=mail_from,
            rcpt_tos=rcpt_tos,
            raw=raw,
            size=len(raw),
            message_id=message_id,
            dedup_key=dedup_key(message_id, raw),
        )
        session.add(row)
    return row.id


async def sent(
    db: Database, identity: Identity, recipient: str, message_id: str = "<outbound-1@platform.example.com>"
) -> None:
    """What the gateway records when it relays a message: the team really mailed `recipient`."""
    async with db.transaction() as session:
        await record_sent(session, identity, [recipient], message_id=message_id, verp=False, at=utcnow())


async def load(db: Database, message_id: int) -> InboundMessage:
    async with db.session() as session:
        row = await session.get(InboundMessage, message_id)
    assert row is not None
    return row


async def suppressions(db: Database) -> list[tuple[str, str, int | None]]:
    async with db.session() as session:
        rows = await session.scalars(select(Suppression).order_by(Suppression.address))
        return [(s.address, s.reason, s.source_message_id) for s in rows]


async def audit_events(db: Database) -> list[AuditEvent]:
    async with db.session() as session:
        return list(await session.scalars(select(AuditEvent).where(AuditEvent.action == "suppression.added")))


async def test_lead_is_forwarded_once_even_if_processed_twice(db: Database, identity: Identity) -> None:
    calls = Calls()
    incoming = pipeline(db, calls)
    message_id = await store(db, LEAD_REPLY, [IDENTITY_ADDRESS])

    await incoming.process(message_id)
    await incoming.process(message_id)

    assert len(calls.forwards) == 1
    identity_id, fwd = calls.forwards[0]
    assert identity_id == identity.id
    row = await load(db, message_id)
    assert (row.classification, row.classified_by, row.identity_id) == ("lead", "default", identity.id)
    assert row.processed_at is not None and row.forwarded_at is not None

    # The forward: from the identity to its forwarding address, answerable to the lead, original attached intact.
    assert fwd["To"] == FORWARDING_ADDRESS
    assert fwd["From"].addresses[0].addr_spec == IDENTITY_ADDRESS
    assert fwd["Reply-To"].addresses[0].addr_spec == "sam@customer.example.org"
    assert fwd["Subject"] == "Fwd: Re: Quick question about your Q3 plans"
    assert fwd[FORWARDED_HEADER] == str(message_id)
    assert fwd["In-Reply-To"] == "<lead-1@customer.example.org>"
    assert "Could we talk on Tuesday at 3pm?" in fwd.get_body(("plain",)).get_content()
    [attachment] = list(fwd.iter_attachments())
    assert attachment.get_content_type() == "message/rfc822"
    wire = fwd.as_bytes(policy=policy.SMTP)
    assert LEAD_REPLY in wire
    parsed = BytesParser(policy=policy.default).parsebytes(wire)
    assert [a.get_content()["Message-ID"] for a in parsed.iter_attachments()] == ["<lead-1@customer.example.org>"]
    # If the forward ever comes back to us (a forwarder on the forwarding mailbox), it is a loop, not a lead.
    assert classify(wire).kind == MessageKind.LOOP


async def test_concurrent_processing_forwards_once(db: Database, identity: Identity) -> None:
    calls = Calls()
    message_id = await store(db, LEAD_REPLY, [TRACKING_ADDRESS])
    # Two "processes": separate engines on the same database, each with its own pipeline.
    other_db = Database(db.url)
    try:
        first, second = pipeline(db, calls), pipeline(other_db, calls)
        await asyncio.gather(*(p.process(message_id) for p in (first, second, first, second)))
    finally:
        await other_db.dispose()

    assert [identity_id for identity_id, _ in calls.forwards] == [identity.id]
    assert (await load(db, message_id)).identity_id == identity.id


async def test_bounce_suppresses_failed_address_and_is_not_forwarded(db: Database, identity: Identity) -> None:
    await sent(db, identity, "nobody@customer.example.org")
    calls = Calls()
    incoming = pipeline(db, calls)
    message_id = await store(db, POSTFIX_DSN_5XX, [IDENTITY_ADDRESS], mail_from="")

    await incoming.process(message_id)

    assert calls.forwards == []
    assert await suppressions(db) == [("nobody@customer.example.org", SuppressionReason.HARD_BOUNCE, message_id)]
    row = await load(db, message_id)
    assert (row.classification, row.classified_by, row.forwarded_at) == ("bounce", "dsn-report", None)
    [event] = await audit_events(db)
    assert event.actor == "inbound" and event.identity_id == identity.id
    assert event.detail["address"] == "nobody@customer.example.org"
    assert event.detail["reason"] == SuppressionReason.HARD_BOUNCE

    # The same address bouncing again (another message) adds nothing and does not fail.
    again = await store(db, POSTFIX_DSN_5XX.replace(b"<outbound-1@", b"<outbound-9@"), [IDENTITY_ADDRESS])
    await incoming.process(again)
    assert await suppressions(db) == [("nobody@customer.example.org", SuppressionReason.HARD_BOUNCE, message_id)]
    assert len(await audit_events(db)) == 1
    assert (await load(db, again)).classification == MessageKind.BOUNCE


async def test_our_own_addresses_are_never_suppressed(db: Database, identity: Identity) -> None:
    raw = POSTFIX_DSN_5XX.replace(b"Nobody@Customer.example.org", b"old.name@platform.example.com")
    message_id = await store(db, raw, [IDENTITY_ADDRESS], mail_from="")
    await pipeline(db, Calls()).process(message_id)
    assert await suppressions(db) == []
    assert (await load(db, message_id)).classification == MessageKind.BOUNCE


async def test_unsubscribe_suppresses_the_sender(db: Database, identity: Identity) -> None:
    await sent(db, identity, "sam@customer.example.org", "<outreach-1@platform.example.com>")
    calls = Calls()
    message_id = await store(db, PLEASE_REMOVE_ME, [IDENTITY_ADDRESS])

    await pipeline(db, calls).process(message_id)

    assert calls.forwards == []
    assert await suppressions(db) == [("sam@customer.example.org", "unsubscribe", message_id)]
    row = await load(db, message_id)
    assert (row.classification, row.classified_by) == ("unsubscribe", "unsubscribe-request")
    [event] = await audit_events(db)
    assert (event.detail["address"], event.detail["reason"]) == ("sam@customer.example.org", "unsubscribe")


async def test_verification_hands_tokens_and_row_id_over(db: Database, identity: Identity) -> None:
    calls = Calls()
    message_id = await store(db, GMAIL_FORWARDED_TOKEN_IN_BODY, [TRACKING_ADDRESS], mail_from="jane@acme.example.com")

    await pipeline(db, calls).process(message_id)

    assert calls.tokens == [([TOKEN], message_id)]
    assert calls.forwards == []
    row = await load(db, message_id)
    assert (row.classification, row.classified_by, row.identity_id) == ("verification", "own-token", identity.id)


async def test_process_pending_picks_up_rows_stored_while_no_processor_ran(db: Database, identity: Identity) -> None:
    # The crash-after-250 case: rows committed, nothing processed them.
    await sent(db, identity, "nobody@customer.example.org")
    lead = await store(db, LEAD_REPLY, [IDENTITY_ADDRESS])
    bounce = await store(db, POSTFIX_DSN_5XX, [IDENTITY_ADDRESS], mail_from="")
    auto_reply = await store(db, VACATION_AUTO_SUBMITTED, [IDENTITY_ADDRESS])
    verification = await store(db, GMAIL_FORWARDED_TOKEN_IN_BODY, [TRACKING_ADDRESS])
    calls = Calls()
    incoming = pipeline(db, calls)

    assert await incoming.process_pending() == 4
    assert await incoming.process_pending() == 0

    assert [identity_id for identity_id, _ in calls.forwards] == [identity.id]
    assert calls.forwards[0][1][FORWARDED_HEADER] == str(lead)
    assert calls.tokens == [([TOKEN], verification)]
    assert await suppressions(db) == [("nobody@customer.example.org", SuppressionReason.HARD_BOUNCE, bounce)]
    kinds = {m: (await load(db, m)).classification for m in (lead, bounce, auto_reply, verification)}
    assert kinds == {lead: "lead", bounce: "bounce", auto_reply: "auto_reply", verification: "verification"}


async def test_failed_forward_is_released_and_retried(db: Database, identity: Identity) -> None:
    calls = Calls(fail_forwards=1)
    incoming = pipeline(db, calls)
    message_id = await store(db, LEAD_REPLY, [IDENTITY_ADDRESS])

    with pytest.raises(ConnectionError):
        await incoming.process(message_id)
    row = await load(db, message_id)
    assert (row.processed_at, row.classification, row.forwarded_at) == (None, None, None)

    assert await incoming.process_pending() == 1
    assert len(calls.forwards) == 1
    assert (await load(db, message_id)).forwarded_at is not None


# A processor in another OS process: it takes the message and hangs while forwarding, until killed.
HANGING_PROCESSOR = """
import asyncio, sys
from bot.mail.domains import PlatformDomains
from bot.services.incoming import IncomingMail
from models import Database

DOMAINS = PlatformDomains("platform.example.com", "track.example.com")

async def main(url, message_id):
    async def forward(identity, message):
        print("forwarding", flush=True)
        await asyncio.Event().wait()

    async def on_tokens(tokens, message_id):
        pass

    db = Database(url)
    incoming = IncomingMail(db, DOMAINS, on_tokens=on_tokens, forward=forward)
    await incoming.process(message_id)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def lock_released(db: Database, message_id: int) -> None:
    """PostgreSQL drops a dead client's advisory locks once its backend has seen the connection close, a moment
    after the kill (an flock on SQLite goes with the process at once): wait for that, with a bound."""
    if db.is_sqlite:
        return
    query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :id AND granted")
    async with asyncio.timeout(10):
        while True:
            async with db.engine.connect() as connection:
                if not await connection.scalar(query, {"id": message_id}):
                    return
            await asyncio.sleep(0.02)


async def test_message_a_killed_process_was_processing_is_taken_over_at_once(db: Database, identity: Identity) -> None:
    message_id = await store(db, LEAD_REPLY, [IDENTITY_ADDRESS])
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HANGING_PROCESSOR, db.url, str(message_id), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
        assert line == b"forwarding\n"
        calls = Calls()
        incoming = pipeline(db, calls)
        # Alive and busy with it: nobody else touches the message.
        assert await incoming.process_pending() == 0
        await incoming.process(message_id)
        assert calls.forwards == []
    finally:
        child.kill()
        await child.wait()

    # Killed mid-way (no cleanup ran): the message is still pending, and its lock died with the process.
    assert (await load(db, message_id)).processed_at is None
    await lock_released(db, message_id)
    assert await incoming.process_pending() == 1
    assert len(calls.forwards) == 1
    assert (await load(db, message_id)).forwarded_at is not None


async def test_message_being_processed_by_another_process_is_left_alone(db: Database, identity: Identity) -> None:
    message_id = await store(db, LEAD_REPLY, [IDENTITY_ADDRESS])
    forwarding, release = asyncio.Event(), asyncio.Event()
    first_calls = Calls()

    async def slow_forward(identity: Identity, message: EmailMessage) -> None:
        forwarding.set()
        await release.wait()
        await first_calls.forward(identity, message)

    other_db = Database(db.url)
    first = IncomingMail(other_db, DOMAINS, on_tokens=first_calls.on_tokens, forward=slow_forward)
    busy = asyncio.ensure_future(first.process(message_id))
    try:
        await asyncio.wait_for(forwarding.wait(), timeout=10)
        second_calls = Calls()
        second = pipeline(db, second_calls)
        assert await second.process_pending() == 0
        await second.process(message_id)
        assert second_calls.forwards == []
        release.set()
        await busy
    finally:
        busy.cancel()
        await other_db.dispose()

    assert len(first_calls.forwards) == 1
    assert await pipeline(db, Calls()).process_pending() == 0


async def test_lead_for_no_known_identity_is_recorded_not_forwarded(db: Database, identity: Identity) -> None:
    calls = Calls()
    message_id = await store(db, LEAD_REPLY, ["gone@platform.example.com"])
    await pipeline(db, calls).process(message_id)
    assert calls.forwards == []
    row = await load(db, message_id)
    assert (row.classification, row.identity_id, row.forwarded_at) == ("lead", None, None)
    assert row.processed_at is not None


async def test_inbound_server_and_pipeline_together(db: Database, identity: Identity) -> None:
    """The wiring the composition root does: on_stored = IncomingMail.process."""
    import aiosmtplib

    from bot.smtp.inbound import InboundServer

    forwarded = asyncio.Event()
    calls = Calls()

    async def forward(identity: Identity, message: EmailMessage) -> None:
        await calls.forward(identity, message)
        forwarded.set()

    incoming = IncomingMail(db, DOMAINS, on_tokens=calls.on_tokens, forward=forward)
    server = InboundServer(InboundStore(db, DOMAINS, on_stored=incoming.process))
    await server.start("127.0.0.1", 0)
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False, timeout=10) as client:
            await client.sendmail("sam@customer.example.org", [IDENTITY_ADDRESS], LEAD_REPLY)
        await asyncio.wait_for(forwarded.wait(), timeout=10)
    finally:
        await server.stop()
    assert len(calls.forwards) == 1


def test_forward_of_an_8bit_original_keeps_it_readable() -> None:
    from bot.services.incoming.forwarding import ForwardTarget, Original, build_forward

    raw = (
        "From: Lena Kunde <lena@kunde.example.de>\r\nTo: jane.doe@platform.example.com\r\n"
        "Subject: AW: Grüße\r\nMessage-ID: <umlaut-1@kunde.example.de>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Gerne, nächste Woche passt.\r\n"
    ).encode()
    target = ForwardTarget("Jane Doe", IDENTITY_ADDRESS, FORWARDING_ADDRESS, IDENTITY_ADDRESS)
    wire = build_forward(target, Original(42, raw, "k" * 128, utcnow()))
    parsed = BytesParser(policy=policy.default).parsebytes(wire)
    assert parsed["Subject"] == "Fwd: AW: Grüße"
    assert "Gerne, nächste Woche passt." in parsed.get_body(("plain",)).get_content()
    [attachment] = list(parsed.iter_attachments())
    original = attachment.get_content()
    assert original["Message-ID"] == "<umlaut-1@kunde.example.de>"
    assert original.get_content().strip() == "Gerne, nächste Woche passt."


async def test_company_identity_lead_is_forwarded_from_our_domain(db: Database) -> None:
    """A copy reaching a company identity's tracking address leaves from the platform: From our own domain,
    so the customer's DMARC does not reject it."""
    async with db.transaction() as session:
        company = Identity(
            team_id="T0TEST",
            kind=IdentityKind.COMPANY,
            display_name="Jane Doe",
            company_name="Acme Inc.",
            address="jane@acme.example.com",
            forwarding_address="sales@acme.example.com",
            notices_channel="C_TEAM",
            created_by="U_LEAD",
            tracking_address=TRACKING_ADDRESS,
        )
        session.add(company)
    calls = Calls()
    message_id = await store(db, LEAD_REPLY.replace(b"jane.doe@platform", b"jane@acme"), [TRACKING_ADDRESS])

    await pipeline(db, calls).process(message_id)

    [(identity_id, fwd)] = calls.forwards
    assert identity_id == company.id
    assert fwd["To"] == "sales@acme.example.com"
    [sender] = fwd["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Jane Doe", "noreply@platform.example.com")
    assert "replied to jane@acme.example.com" in fwd.get_body(("plain",)).get_content()
