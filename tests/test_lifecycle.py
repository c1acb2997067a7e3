"""An identity's whole life end to end: disabled (the gateway refuses it, replies are still forwarded), enabled
(sends again), deleted after a confirmation naming it (credentials revoked, address held for 30 days, audit kept),
and its address released when the hold ends. Both databases: the hold and the release are SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import select, update

from bot.sandbox import FakeSlack
from bot.services.gateway.credentials import IssuedCredential
from bot.services.incoming import InboundStore
from handlers.identity.ids import Lifecycle as LC
from models import AuditEvent, Identity
from models.base import utcnow
from tests.conftest import CHANNEL, LEAD
from tests.test_inbound_door import ADDRESS, FORWARD_TIMEOUT, Door, lead, start_door


@pytest.fixture
async def life(tmp_path: Path, database_url: str, fake_slack: FakeSlack) -> AsyncIterator[Door]:
    running = await start_door(tmp_path, database_url, fake_slack)
    yield running
    await running.bot.slack.close()
    await running.bot.runtime.stop()
    await running.relay.close()


async def send_as(door: Door, credential: IssuedCredential, subject: str) -> tuple[int, str]:
    """One message through the gateway: the reply that ended it."""
    gateway = door.bot.runtime.gateway
    client = aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.login(credential.username, credential.password)
        await client.mail(ADDRESS)
        await client.rcpt("lead@customer.example.org")
        raw = f"From: {ADDRESS}\r\nTo: lead@customer.example.org\r\nSubject: {subject}\r\n\r\nHello\r\n"
        reply = await client.data(raw.encode())
        return reply.code, reply.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        client.close()


async def command(door: Door, text: str, user: str = LEAD) -> str:
    n = len(door.bot.fake.responses)
    await door.bot.slack.command(text, user=user)
    return str((await door.bot.fake.wait_for_response(after=n))["text"])


async def channel_says(door: Door, words: str, *, after: int) -> None:
    await door.bot.fake.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == CHANNEL and words in c.args.get("text", ""), after=after
    )


async def test_disable_enable_delete_and_the_address_held_for_30_days(life: Door) -> None:
    bot = life.bot
    credential = await bot.runtime.services.credentials.issue(ADDRESS, actor="test")

    # Only the creator or a manager may switch it off.
    refused = await command(life, f"disable {ADDRESS}", user="U_OTHER")
    assert f"Only <@{LEAD}> or a manager can disable or enable" in refused

    mark = bot.fake.mark()
    assert "is disabled" in await command(life, f"disable {ADDRESS}")
    await channel_says(life, "was disabled", after=mark)
    code, text = await send_as(life, credential, "while disabled")
    assert code == 550 and text.startswith("5.7.1") and "disabled" in text
    # Replies to past campaigns still arrive and are forwarded.
    assert (await life.send(lead("Re: offer", "Still interested."))).code == 250
    forward = await life.mailbox.wait_for(lambda m: "Re: offer" in str(m["Subject"]), timeout=FORWARD_TIMEOUT)
    assert forward["To"] == life.identity.forwarding_address

    assert "enabled again" in await command(life, f"enable {ADDRESS}")
    assert await send_as(life, credential, "after enabling") == (250, "2.0.0 Ok: relayed")
    await life.mailbox.wait_for(lambda m: "after enabling" in str(m["Subject"]), timeout=FORWARD_TIMEOUT)

    # Delete asks first, in a modal naming the address.
    mark = bot.fake.mark()
    await bot.slack.command(f"delete {ADDRESS}")
    confirm = await bot.loaded_form(mark, LC.delete_callback)
    assert ADDRESS in str(confirm["blocks"]) and "30 days" in str(confirm["blocks"])
    mark = bot.fake.mark()
    ack = await bot.slack.submit(confirm["id"])
    assert ack.response_action == "update" and "was deleted" in str(ack.body)
    await channel_says(life, "was deleted", after=mark)

    # Its credentials are revoked; it is gone from the commands; its audit trail stays.
    gateway = bot.runtime.gateway
    client = aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False, timeout=10)
    await client.connect()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as denied:
        await client.login(credential.username, credential.password)
    assert denied.value.code == 535
    client.close()
    assert "No identity with the address" in await command(life, f"show {ADDRESS}")
    async with bot.db.session() as session:
        actions = list(
            await session.scalars(select(AuditEvent.action).where(AuditEvent.identity_id == life.identity.id))
        )
    assert {"identity.disabled", "identity.enabled", "identity.deleted", "gateway.credential_issued"} <= set(actions)

    # Held: replies still arrive, and nobody can take the address.
    assert (await life.send(lead("Re: late", "Sorry for the delay.", "<late-1@prospect.example>"))).code == 250
    await life.mailbox.wait_for(lambda m: "Re: late" in str(m["Subject"]), timeout=FORWARD_TIMEOUT)
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=ADDRESS)
    ack = await bot.slack.submit(view["id"])
    assert "held until" in ack.errors.get("address", ""), ack.body

    # 30 days later the address is released: refused at the door, free for a new identity.
    async with bot.db.transaction() as session:
        await session.execute(
            update(Identity).where(Identity.id == life.identity.id).values(deleted_at=utcnow() - timedelta(days=30))
        )
    assert await bot.runtime.services.lifecycle.release_expired() == 1
    # (The running door remembers addresses it served for 5 minutes; a fresh look refuses it.)
    assert not await InboundStore(bot.db, bot.runtime.services.domains).serves(ADDRESS)
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=ADDRESS)
    ack = await bot.slack.submit(view["id"])
    assert ack.response_action == "update", ack.body
    async with bot.db.session() as session:
        rows = list(await session.execute(select(Identity.address, Identity.former_address).order_by(Identity.id)))
    assert rows == [(f"released:{life.identity.id}", ADDRESS), (ADDRESS, None)]
