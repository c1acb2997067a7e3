"""Attribution before action: reports change suppression only when they match mail the team really sent.

Forged DSNs, ARF complaints and "unsubscribe" mail naming addresses the team never mailed change nothing (stored and
counted); a genuine bounce to a return path (VERP) or quoting the Message-ID of a message a company identity sent
(arriving through its CC tracking forwarder) suppresses that recipient for the team, and the gateway then refuses it
with 550 5.7.1. A single message never adds more than a handful; a 1.6 MB report naming 80,000 addresses adds none
and /healthz keeps answering while it is processed."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import aiosmtplib
import pytest
from sqlalchemy import func, select

from bot.mail.domains import PlatformDomains
from bot.services.incoming import IncomingMail
from bot.services.incoming.attribution import MAX_SUPPRESSIONS_PER_MESSAGE
from bot.services.rates import SendingRates
from models import Attribution, Database, Identity, IdentityKind, InboundMessage, SentRecipient, Suppression
from models.base import utcnow
from tests.conftest import PLATFORM_DOMAIN, TRACKING_DOMAIN
from tests.gateway_helpers import make_identity
from tests.sent_mail import record_sent
from tests.test_inbound_door import ADDRESS, Door, door  # noqa: F401
from tests.test_incoming import Calls, store

DOMAINS = PlatformDomains(PLATFORM_DOMAIN, TRACKING_DOMAIN)
OUTREACH_ID = "<outreach-7@platform.example.com>"


def dsn(failed: list[str], original_id: str = OUTREACH_ID, to: str = ADDRESS) -> bytes:
    """An RFC 3464 report: one `failed 5.1.1` block per address, the original's headers returned."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {a}\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 no user\n\n"
        for a in failed
    )
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.example.org>\n"
        f"To: {to}\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <dsn-{len(failed)}@mx.example>\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.customer.example.org\n\n{blocks}"
        f"--B\nContent-Type: text/rfc822-headers\n\nFrom: {ADDRESS}\nTo: {failed[0] if failed else ''}\n"
        f"Subject: Quick question\nMessage-ID: {original_id}\n\n--B--\n"
    ).encode()


def arf(complainer: str, original_id: str = OUTREACH_ID) -> bytes:
    return (
        "From: FBL <fbl@isp.example>\nTo: abuse@platform.example.com\nSubject: Complaint about message\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nA user reported this message as spam.\n\n"
        f"--B\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nVersion: 1\n"
        f"Original-Rcpt-To: <{complainer}>\n\n"
        f"--B\nContent-Type: message/rfc822\n\nFrom: {ADDRESS}\nTo: {complainer}\nSubject: Quick question\n"
        f"Message-ID: {original_id}\n\nHello\n--B--\n"
    ).encode()


def unsubscribe_from(sender: str) -> bytes:
    return f"From: {sender}\nTo: {ADDRESS}\nSubject: Re: Quick question\n\nPlease remove me from your list.\n".encode()


@pytest.fixture
async def identity(db: Database) -> Identity:
    return await make_identity(db, ADDRESS)


async def suppressed(db: Database) -> list[tuple[str | None, str]]:
    async with db.session() as session:
        rows = await session.scalars(select(Suppression).order_by(Suppression.address))
        return [(s.team_id, s.address) for s in rows]


async def record(db: Database, identity: Identity, recipients: list[str], *, verp: bool = False) -> list[str]:
    """What the gateway / platform relay records; returns the VERP tokens."""
    async with db.transaction() as session:
        rows = await record_sent(session, identity, recipients, message_id=OUTREACH_ID, verp=verp, at=utcnow())
        return [r.verp_token or "" for r in rows]


async def process(db: Database, raw: bytes, rcpt: str = ADDRESS, mail_from: str = "") -> InboundMessage:
    incoming = IncomingMail(db, DOMAINS, on_tokens=Calls().on_tokens, forward=Calls().forward)
    message_id = await store(db, raw, [rcpt], mail_from=mail_from)
    await incoming.process(message_id)
    async with db.session() as session:
        row = await session.get(InboundMessage, message_id)
    assert row is not None and row.processed_at is not None
    return row


async def test_forged_reports_naming_addresses_never_mailed_change_nothing(db: Database, identity: Identity) -> None:
    victims = [f"victim{n}@elsewhere.example.net" for n in range(1000)]
    rows = [
        await process(db, dsn(victims)),
        await process(db, dsn(victims[:1], original_id="<forged@attacker.example>")),
        await process(db, arf(victims[0])),
        await process(db, unsubscribe_from(victims[1]), mail_from=victims[1]),
        # A team's real message quoted, but a recipient it was never sent to.
        await process(db, dsn(["someone.else@customer.example.org"])),
    ]
    await record(db, identity, ["real@customer.example.org"])
    rows.append(await process(db, dsn(["someone.else@customer.example.org"]).replace(b"<dsn-1@", b"<dsn-1b@")))

    assert await suppressed(db) == []
    assert [r.attribution for r in rows] == [Attribution.UNMATCHED] * 6
    counts = await IncomingMail(db, DOMAINS, on_tokens=Calls().on_tokens, forward=Calls().forward).report_counts()
    assert counts == {("bounce", "unmatched"): 4, ("complaint", "unmatched"): 1, ("unsubscribe", "unmatched"): 1}


async def test_reports_matching_mail_the_team_sent_suppress_for_the_team(db: Database, identity: Identity) -> None:
    await record(db, identity, ["bounced@customer.example.org", "complainer@isp.example", "leaver@corp.example"])

    assert (await process(db, dsn(["Bounced@Customer.example.org"]))).attribution == Attribution.MESSAGE_ID
    assert (await process(db, arf("complainer@isp.example"))).attribution == Attribution.MESSAGE_ID
    leaver = await process(db, unsubscribe_from("Leaver <leaver+news@corp.example>"), mail_from="leaver@corp.example")
    assert leaver.attribution == Attribution.MAILED
    assert await suppressed(db) == [
        ("T0TEST", "bounced@customer.example.org"),
        ("T0TEST", "complainer@isp.example"),
        ("T0TEST", "leaver@corp.example"),
    ]
    # The identity's rates count the attributed hard bounce and complaint (an unsubscribe is neither).
    rates = await SendingRates(db).of(identity.id)
    assert (rates.sent, rates.hard_bounces, rates.complaints) == (3, 1, 1)


async def test_a_report_naming_many_mailed_addresses_adds_at_most_a_handful(db: Database, identity: Identity) -> None:
    recipients = [f"r{n}@customer.example.org" for n in range(40)]
    await record(db, identity, recipients)
    row = await process(db, dsn(recipients))
    assert row.attribution == Attribution.MESSAGE_ID
    assert len(await suppressed(db)) == MAX_SUPPRESSIONS_PER_MESSAGE


async def test_a_delayed_bounce_matches_but_suppresses_nothing(db: Database, identity: Identity) -> None:
    [token] = await record(db, identity, ["slow@customer.example.org"], verp=True)
    delayed = dsn(["slow@customer.example.org"]).replace(
        b"Action: failed\nStatus: 5.1.1", b"Action: delayed\nStatus: 4.4.1"
    )
    row = await process(db, delayed, rcpt=DOMAINS.return_path(token))
    assert (row.classification, row.attribution) == ("bounce", Attribution.VERP)
    assert await suppressed(db) == []
    assert (await SendingRates(db).of(identity.id)).hard_bounces == 0, "a delay is not a hard bounce"


# ---------------------------------------------------------------------------------------------------------------
# End to end: SMTP in, the gateway refusing afterwards


async def wait_processed(d: Door, count: int) -> None:
    async with asyncio.timeout(30):
        while True:
            async with d.bot.db.session() as session:
                done = await session.scalar(
                    select(func.count()).select_from(InboundMessage).where(InboundMessage.processed_at.is_not(None))
                )
            if done >= count:
                return
            await asyncio.sleep(0.05)  # polling the database with a bound: the processing runs in the bot


async def gateway_refuses(d: Door, address: str) -> aiosmtplib.SMTPRecipientRefused:
    credential = await d.bot.runtime.services.credentials.issue(ADDRESS, actor="test")
    gateway = d.bot.runtime.gateway
    client = aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.login(credential.username, credential.password)
        await client.mail(ADDRESS)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt(address)
        return refused.value
    finally:
        client.close()


async def test_a_genuine_bounce_at_a_return_path_suppresses_and_the_gateway_refuses_550(door: Door) -> None:
    [token] = await record(door.bot.db, door.identity, ["gone@customer.example.org"], verp=True)
    return_path = DOMAINS.return_path(token)
    inbound = door.bot.runtime.inbound
    async with aiosmtplib.SMTP(hostname=inbound.host, port=inbound.port, start_tls=False, timeout=10) as client:
        # A return path nobody was sent does not exist.
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await client.sendmail("", [DOMAINS.return_path("0" * 20)], dsn(["gone@customer.example.org"]))
        # The real one: even a report whose body names someone else suppresses the token's recipient only.
        await client.sendmail("", [return_path], dsn(["another@customer.example.org"]))
    await wait_processed(door, 1)

    assert await suppressed(door.bot.db) == [("T0TEST", "gone@customer.example.org")]
    refused = await gateway_refuses(door, "Gone@customer.example.org")
    assert refused.code == 550 and refused.message.startswith("5.7.1")


async def test_a_bounce_through_a_company_tracking_forwarder_suppresses_for_the_team(door: Door) -> None:
    tracking = f"cc-0123456789abcdef0123@{TRACKING_DOMAIN}"
    async with door.bot.db.transaction() as session:
        company = Identity(
            team_id=door.identity.team_id,
            kind=IdentityKind.COMPANY,
            display_name="Jo",
            company_name="Acme",
            address="jo@acme.example.com",
            forwarding_address="sales@acme.example.com",
            notices_channel="C_TEAM",
            created_by="U_LEAD",
            tracking_address=tracking,
        )
        session.add(company)
    await record(door.bot.db, company, ["left.company@customer.example.org"])
    # The customer's mailbox received the bounce and its forwarder copies it to the tracking address.
    forwarded = dsn(["left.company@customer.example.org"], to="jo@acme.example.com")
    assert (await door.send(forwarded, to=tracking, sender="jo@acme.example.com")).code == 250
    await wait_processed(door, 1)

    assert await suppressed(door.bot.db) == [("T0TEST", "left.company@customer.example.org")]
    # Every identity of the team is refused, the platform one included.
    refused = await gateway_refuses(door, "left.company@customer.example.org")
    assert refused.code == 550 and refused.message.startswith("5.7.1")


async def test_a_report_naming_80000_addresses_adds_none_and_healthz_keeps_answering(door: Door) -> None:
    await record(door.bot.db, door.identity, ["real@customer.example.org"])
    addresses = "\n".join(f"user{n:05d}@x{n % 97}.example" for n in range(80_000))
    report = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\nTo: jane@platform.example.com\n"
        "Subject: Undelivered Mail Returned to Sender\nMessage-ID: <big@mx.example.net>\n\n"
        f"These addresses had permanent fatal errors (550 5.1.1 user unknown):\n\n{addresses}\n\n"
        "--- Original message follows\nMessage-ID: <outreach-7@platform.example.com>\n"
    ).encode()
    assert len(report) > 1_600_000
    sending = asyncio.ensure_future(door.send(report))
    worst = 0.0
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(120):
            while True:
                started = time.monotonic()
                async with http.get(f"{door.bot.runtime.http_url}/healthz", timeout=aiohttp.ClientTimeout(total=1)):
                    worst = max(worst, time.monotonic() - started)
                async with door.bot.db.session() as session:
                    row = await session.scalar(select(InboundMessage).where(InboundMessage.size > 1_000_000))
                if row is not None and row.processed_at is not None:
                    break
                await asyncio.sleep(0.02)
    assert (await sending).code == 250
    assert worst < 1.0
    assert row.attribution == Attribution.UNMATCHED
    assert await suppressed(door.bot.db) == []
    async with door.bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(SentRecipient)) == 1


async def test_the_whole_loop_mail_out_through_the_gateway_its_bounce_back_at_the_return_path(door: Door) -> None:
    """Issues 9 and 10 together: the gateway relays a platform identity's message with a per-recipient return path;
    the recipient's server bounces it there; the team's next message to that recipient is refused at RCPT."""
    credential = await door.bot.runtime.services.credentials.issue(ADDRESS, actor="test")
    gateway = door.bot.runtime.gateway
    outreach = (
        f"From: {ADDRESS}\r\nTo: gone@customer.example.org, stays@customer.example.org\r\nSubject: Hello\r\n"
        "Message-ID: <loop-1@platform.example.com>\r\n\r\nHi.\r\n"
    ).encode()
    async with aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False, timeout=10) as client:
        await client.login(credential.username, credential.password)
        await client.sendmail(ADDRESS, ["gone@customer.example.org", "stays@customer.example.org"], outreach)
    copies = {d.rcpt_tos[0]: d.mail_from for d in door.mailbox.deliveries}
    return_path = copies["gone@customer.example.org"]
    assert DOMAINS.return_path_token(return_path) is not None, f"not a return path of ours: {return_path}"
    assert copies["stays@customer.example.org"] != return_path, "each recipient has a return path of its own"

    # The remote server bounces the copy to its return path (a null sender, as MTAs send bounces).
    async with aiosmtplib.SMTP(hostname=door.bot.runtime.inbound.host, port=door.bot.runtime.inbound.port) as client:
        await client.sendmail("", [return_path], dsn(["gone@customer.example.org"], "<loop-1@platform.example.com>"))
    await wait_processed(door, 1)

    assert await suppressed(door.bot.db) == [("T0TEST", "gone@customer.example.org")]
    refused = await gateway_refuses(door, "gone@customer.example.org")
    assert refused.code == 550 and "bounced" in refused.message
    rates = await SendingRates(door.bot.db).of(door.identity.id)
    assert (rates.sent, rates.hard_bounces) == (2, 1)
