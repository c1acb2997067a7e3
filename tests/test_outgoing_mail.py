"""What relayed mail carries, end to end through the running bot: platform mail is DKIM-signed and verifies against
the record `identity-bot dkim record` prints, company mail is not signed by us, and every copy has one-click
unsubscribe links that work (POST to the URL, mail to the mailto:) while a GET or a made-up token changes nothing."""

from __future__ import annotations

import asyncio
import re
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.header import Header
from pathlib import Path

import aiohttp
import aiosmtplib
import dkim
import pytest
from sqlalchemy import func, select, update

from bot.mail.dkim import public_record
from bot.sandbox import FakeSlack
from bot.services.gateway import IssuedCredential, Suppressions
from models import AuditEvent, Database, Identity, InboundMessage, Suppression
from tests.conftest import PLATFORM_DOMAIN, TEAM, Bot, start_bot
from tests.gateway_helpers import make_identity
from tests.mailservers import (  # noqa: F401
    Mailbox,
    TestCA,
    free_port,
    mail_ca_fixture,
    start_smtp_server,
    trust_mail_ca_fixture,
)
from tests.test_cli import cli
from tests.test_gateway_recipients import eventually

ANN = f"ann@{PLATFORM_DOMAIN}"
COMPANY = "jane@acme.example.com"
APP_PASSWORD = "abcdwxyzefghstuv"
LEAD = "lead@customer.example.org"
SIGNED = ["from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"]


@dataclass
class MailBot:
    bot: Bot
    relayed: Mailbox  # what the platform relay (RELAY_SMTP_URL) received
    company: Mailbox  # what the customer's own server received
    company_port: int  # the customer's own server (STARTTLS + AUTH)
    public_url: str

    @property
    def db(self) -> Database:
        return self.bot.db


async def start_mailbot(tmp_path: Path, database_url: str, fake: FakeSlack, ca: TestCA) -> tuple[MailBot, list]:
    relayed, company = Mailbox(), Mailbox()
    relay = await start_smtp_server(mailbox=relayed)
    submission = await start_smtp_server(
        mailbox=company, security="starttls", tls_context=ca.server_context(), auth={COMPANY: APP_PASSWORD}
    )
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    bot = await start_bot(
        tmp_path,
        database_url,
        fake,
        PORT=str(port),
        PUBLIC_URL=public_url + "/",
        RELAY_SMTP_URL=f"smtp://127.0.0.1:{relay.port}?security=none",
    )
    return MailBot(bot, relayed, company, submission.port, public_url), [relay, submission]


@pytest.fixture
async def mailbot(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack, trust_mail_ca: TestCA
) -> AsyncIterator[MailBot]:
    mb, servers = await start_mailbot(tmp_path, database_url, fake_slack, trust_mail_ca)
    yield mb
    await mb.bot.slack.close()
    await mb.bot.runtime.stop()
    for server in servers:
        await server.close()


async def ready_identity(mb: MailBot, address: str, **fields: object) -> tuple[Identity, IssuedCredential]:
    identity = await make_identity(mb.db, address, team_id=TEAM, kind=str(fields.pop("kind", "platform")))
    if fields:
        async with mb.db.transaction() as session:
            await session.execute(update(Identity).where(Identity.id == identity.id).values(**fields))
    return identity, await mb.bot.runtime.services.credentials.issue(address)


async def send(mb: MailBot, credential: IssuedCredential, sender: str, rcpts: list[str], body: bytes) -> int:
    """Submit through the gateway; the code that ended it (a RCPT refusal, or DATA's)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mb.bot.runtime.gateway.port, start_tls=False, timeout=10)
    await client.connect(username=credential.username, password=credential.password)
    try:
        await client.mail(sender)
        for rcpt in rcpts:
            await client.rcpt(rcpt)
        return (await client.data(body)).code
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    finally:
        client.close()


async def rcpt_reply(mb: MailBot, credential: IssuedCredential, sender: str, rcpt: str) -> tuple[int, str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mb.bot.runtime.gateway.port, start_tls=False, timeout=10)
    await client.connect(username=credential.username, password=credential.password)
    try:
        await client.mail(sender)
        reply = await client.rcpt(rcpt)
        await client.rset()  # give the slot back
        return reply.code, reply.message
    except aiosmtplib.SMTPRecipientRefused as exc:
        return exc.code, exc.message
    finally:
        client.close()


def body(sender: str, to: str, subject: str = "Grüße aus Köln") -> bytes:
    """A realistic submission: 8bit UTF-8 body, encoded-word subject, a Bcc the recipients must not see."""
    encoded = Header(subject, "utf-8").encode()
    return (
        f"From: Ann <{sender}>\r\nTo: {to}\r\nBcc: boss@acme.example.com\r\nSubject: {encoded}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Hallo,\r\n\r\nschöne Grüße.\r\n.a line starting with a dot\r\n"
    ).encode()


def record_from_cli(tmp_path: Path) -> tuple[str, str, str]:
    """Run `identity-bot dkim record` against the bot's DATA_DIR: (printed block, record name, TXT value)."""
    done = cli(tmp_path, "dkim", "record", PLATFORM_DOMAIN=PLATFORM_DOMAIN, RELAY_SMTP_URL="smtp://relay.example.net")
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("identitybot._domainkey."))
    name = line.split(" ", 1)[0]
    value = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', line))
    return done.stdout, name, value


def dns_with(name: str, value: str) -> Callable[..., bytes | None]:
    def get_txt(query: bytes, timeout: float = 5) -> bytes | None:
        return value.encode() if query.decode() == name else None

    return get_txt


def signed_headers(raw: bytes) -> list[str]:
    header = re.search(rb"^DKIM-Signature:(.*?)\r?\n(?![ \t])", raw, re.S | re.M)
    assert header is not None
    tags = dict(t.strip().split("=", 1) for t in " ".join(header.group(1).decode().split()).split(";") if "=" in t)
    return [h.strip() for h in tags["h"].replace(" ", "").split(":")]


async def test_platform_mail_is_signed_and_verifies_against_the_printed_record(
    mailbot: MailBot, tmp_path: Path
) -> None:
    mb = mailbot
    _identity, credential = await ready_identity(mb, ANN)
    assert await send(mb, credential, ANN, [LEAD], body(ANN, LEAD)) == 250
    copy = await mb.relayed.wait_for_delivery()
    assert re.fullmatch(rf"bounces\+[0-9a-f]{{20}}@{re.escape(PLATFORM_DOMAIN)}", copy.mail_from)
    assert copy.rcpt_tos == (LEAD,)

    block, name, value = record_from_cli(tmp_path)
    assert name == f"identitybot._domainkey.{PLATFORM_DOMAIN}."
    assert value.startswith("v=DKIM1; k=rsa; p=")
    assert f'{PLATFORM_DOMAIN}. 3600 IN TXT "v=spf1 a:relay.example.net ~all"' in block
    assert f'_dmarc.{PLATFORM_DOMAIN}. 3600 IN TXT "v=DMARC1; p=none"' in block
    key_file = tmp_path / "data" / "dkim.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and public_record(key_file.read_bytes()) == value

    dnsfunc = dns_with(name, value)
    assert await asyncio.to_thread(dkim.verify, copy.raw, dnsfunc=dnsfunc)
    assert signed_headers(copy.raw)[: len(SIGNED)] == SIGNED
    # Covered: the subject, the body and the unsubscribe headers can't be changed on the way.
    for before, after in ((b"Subject: ", b"Subject: RE: "), (b"SGFsbG8s", b"SGVsbG8s"), (b"One-Click", b"One-click")):
        assert before in copy.raw
        assert not await asyncio.to_thread(dkim.verify, copy.raw.replace(before, after, 1), dnsfunc=dnsfunc)
    assert b"Bcc" not in copy.raw and b"boss@" not in copy.raw
    assert b"\r\n\r\nSGFsbG8s" in copy.raw, "the 8bit body went out 7-bit clean, so no hop re-encodes it"
    assert copy.message.get_content().replace("\r\n", "\n") == "Hallo,\n\nschöne Grüße.\n.a line starting with a dot\n"


async def test_company_mail_goes_through_its_own_server_without_a_signature_of_ours(mailbot: MailBot) -> None:
    mb = mailbot
    box = mb.bot.runtime.services.identities.secrets
    _identity, credential = await ready_identity(
        mb,
        COMPANY,
        kind="company",
        smtp_host="localhost",
        smtp_port=mb.company_port,
        smtp_security="starttls",
        smtp_username=COMPANY,
        smtp_password_encrypted=box.encrypt(APP_PASSWORD),
    )
    assert await send(mb, credential, COMPANY, [LEAD], body(COMPANY, LEAD)) == 250
    copy = await mb.company.wait_for_delivery()
    assert (copy.mail_from, copy.rcpt_tos, copy.login) == (COMPANY, (LEAD,), COMPANY)
    assert b"DKIM-Signature" not in copy.raw
    assert copy.message["List-Unsubscribe"] is not None and copy.message["List-Unsubscribe-Post"] is not None
    assert mb.relayed.deliveries == []


# --- one-click unsubscribe ---


def unsubscribe_links(raw_headers: str) -> tuple[str, str]:
    """(mailto address, URL) from a List-Unsubscribe header."""
    mailto = re.search(r"<mailto:([^>]+)>", raw_headers)
    url = re.search(r"<(https?://[^>]+)>", raw_headers)
    assert mailto and url, raw_headers
    return mailto.group(1), url.group(1)


async def suppression_count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Suppression)) or 0)


async def test_one_click_unsubscribe_by_post_not_by_get_and_never_by_a_made_up_token(mailbot: MailBot) -> None:
    mb = mailbot
    _identity, credential = await ready_identity(mb, ANN)
    assert await send(mb, credential, ANN, [LEAD, "other@customer.example.org"], body(ANN, LEAD)) == 250
    await mb.relayed.wait_for_delivery(lambda m: len(mb.relayed.deliveries) == 2)
    copies = {d.rcpt_tos[0]: d for d in mb.relayed.deliveries}
    mailto, url = unsubscribe_links(str(copies[LEAD].message["List-Unsubscribe"]))
    assert url.startswith(f"{mb.public_url}/unsubscribe/") and mailto.startswith("unsubscribe+")
    assert copies[LEAD].message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe_links(str(copies["other@customer.example.org"].message["List-Unsubscribe"]))[1] != url
    assert "list-unsubscribe" in signed_headers(copies[LEAD].raw)

    async with aiohttp.ClientSession() as http:
        async with http.get(url) as page:  # what a link scanner does
            text = await page.text()
            assert page.status == 200 and '<form method="post">' in text and "Unsubscribe</button>" in text
            assert LEAD not in text and page.headers["Referrer-Policy"] == "no-referrer"
        assert await rcpt_reply(mb, credential, ANN, LEAD) == (250, "2.1.5 Ok"), "a GET changes nothing"

        made_up = f"{mb.public_url}/unsubscribe/{'0' * 32}"
        for bogus in (made_up, f"{mb.public_url}/unsubscribe/not-a-token"):
            async with http.post(bogus, data={"List-Unsubscribe": "One-Click"}) as refused:
                assert refused.status == 404 and "not valid" in await refused.text()
        assert await suppression_count(mb.db) == 0

        async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as done:  # RFC 8058's one-click POST
            assert done.status == 200 and "You are unsubscribed" in await done.text()
        async with http.get(url) as again:
            assert "already unsubscribed" in await again.text()

    code, text = await rcpt_reply(mb, credential, ANN, "Lead+Later@Customer.example.org")
    assert code == 550 and text.startswith("5.7.1 <Lead+Later@Customer.example.org> is on the suppression list: unsub")
    assert await rcpt_reply(mb, credential, ANN, "other@customer.example.org") == (250, "2.1.5 Ok")
    async with mb.db.session() as session:
        found = await Suppressions(mb.db).find(TEAM, LEAD)
        events = [
            e.action for e in await session.scalars(select(AuditEvent).where(AuditEvent.actor == "unsubscribe-link"))
        ]
    assert found is not None and found.reason == "unsubscribe" and events == ["suppression.added"]
    assert await Suppressions(mb.db).find("T0OTHER", LEAD) is None, "for this team only"


async def test_one_click_unsubscribe_by_mail_to_the_mailto_address(mailbot: MailBot) -> None:
    mb = mailbot
    _identity, credential = await ready_identity(mb, ANN)
    assert await send(mb, credential, ANN, [LEAD], body(ANN, LEAD)) == 250
    copy = await mb.relayed.wait_for_delivery()
    mailto, _url = unsubscribe_links(str(copy.message["List-Unsubscribe"]))
    inbound = mb.bot.runtime.inbound

    async def mail_to(address: str) -> None:
        await aiosmtplib.send(
            f"From: {LEAD}\r\nTo: {address}\r\nSubject: unsubscribe\r\n\r\n\r\n".encode(),
            sender=LEAD,
            recipients=[address],
            hostname=inbound.host,
            port=inbound.port,
            start_tls=False,
            timeout=10,
        )

    made_up = f"unsubscribe+{'0' * 32}@{PLATFORM_DOMAIN}"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await mail_to(made_up)
    assert refused.value.recipients[0].code == 550
    await mail_to(mailto.upper())  # mail systems may change the case of a local part
    async with asyncio.timeout(10):
        while await Suppressions(mb.db).find(TEAM, LEAD) is None:
            await asyncio.sleep(0.01)
    code, text = await rcpt_reply(mb, credential, ANN, LEAD)
    assert code == 550 and "unsubscribed on" in text
    assert await suppression_count(mb.db) == 1

    async def stored() -> tuple[str | None, str | None]:
        async with mb.db.session() as session:
            row = (await session.scalars(select(InboundMessage))).one()
        return row.classification, row.classified_by

    # The suppression commits first, the message's outcome just after: wait (bounded) for the outcome too.
    await eventually(stored, ("unsubscribe", "list-unsubscribe-mailto"))


async def test_a_reply_that_copies_the_unsubscribe_address_unsubscribes_and_still_reaches_the_team(
    mailbot: MailBot,
) -> None:
    """A lead that Cc's the mailto: unsubscribe address is both: the recipient is unsubscribed, and the reply is
    forwarded like any lead (a lead is never lost)."""
    mb = mailbot
    identity, credential = await ready_identity(mb, ANN)
    assert await send(mb, credential, ANN, [LEAD], body(ANN, LEAD)) == 250
    copy = await mb.relayed.wait_for_delivery()
    mailto, _url = unsubscribe_links(str(copy.message["List-Unsubscribe"]))
    inbound = mb.bot.runtime.inbound
    raw = (
        f"From: {LEAD}\r\nTo: {ANN}\r\nCc: {mailto}\r\nSubject: Re: hello\r\n"
        "Message-ID: <cc-unsub-1@customer.example.org>\r\n\r\nYes, let's talk next week. Please call me.\r\n"
    ).encode()
    await aiosmtplib.send(
        raw, sender=LEAD, recipients=[ANN, mailto], hostname=inbound.host, port=inbound.port, start_tls=False
    )
    forward = await mb.relayed.wait_for_delivery(lambda m: "Re: hello" in str(m["Subject"]), timeout=30)
    assert forward.rcpt_tos == (identity.forwarding_address,)
    assert "let's talk" in forward.raw.decode(errors="replace")
    assert await Suppressions(mb.db).find(TEAM, LEAD) is not None
