"""When the gateway defers an identity for its limit, its channel hears it once (per identity per hour, the claim in
the database), with the count so far, when the next slot frees, and a working *Request increase* button."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from bot.sandbox import FakeSlack
from handlers.limits.ids import Limits as L
from models import Identity
from tests.conftest import CHANNEL, LEAD, PLATFORM_DOMAIN, Bot, start_bot
from tests.gateway_helpers import make_identity

ADDRESS = f"jane@{PLATFORM_DOMAIN}"


@pytest.fixture
async def nbot(tmp_path: Path, database_url: str, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    bot = await start_bot(tmp_path, database_url, fake_slack)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def burst(bot: Bot, username: str, password: str, messages: int, recipients: int) -> list[int]:
    """Messages over one connection; the RCPT reply codes."""
    gateway = bot.runtime.gateway
    codes: list[int] = []
    async with aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False, timeout=10) as client:
        await client.login(username, password)
        for m in range(messages):
            await client.mail(ADDRESS)
            accepted = 0
            for r in range(recipients):
                try:
                    await client.rcpt(f"lead{m}.{r}@customer.example.org")
                    codes.append(250)
                    accepted += 1
                except aiosmtplib.SMTPRecipientRefused as exc:
                    codes.append(exc.code)
            if accepted:
                await client.data(
                    f"From: {ADDRESS}\r\nTo: x@customer.example.org\r\nSubject: m{m}\r\n\r\nHi\r\n".encode()
                )
            else:
                await client.rset()
    return codes


def notices(bot: Bot) -> list[dict]:
    return [
        c.response
        for c in bot.fake.calls_to("chat.postMessage")
        if c.ok and "reached its hourly limit" in c.args.get("text", "")
    ]


async def test_a_burst_over_the_hourly_limit_is_told_once_with_a_working_request_button(nbot: Bot) -> None:
    bot = nbot
    identity: Identity = await make_identity(bot.db, ADDRESS, hourly=3, daily=200)
    credential = await bot.runtime.services.credentials.issue(ADDRESS, actor="test")

    codes = await burst(bot, credential.username, credential.password, messages=3, recipients=3)
    assert codes.count(250) == 3 and codes.count(452) == 6
    # The notice counts every deferral: its message is updated in place to the final count.
    update = await bot.fake.wait_for(
        "chat.update", lambda c: c.ok and "6 recipient(s) deferred so far" in c.args.get("text", "")
    )
    assert await burst(bot, credential.username, credential.password, messages=1, recipients=1) == [452]
    await bot.fake.wait_for("chat.update", lambda c: c.ok and "7 recipient(s)" in c.args.get("text", ""))
    [posted] = notices(bot)  # one message for the whole hour
    assert posted["channel"] == CHANNEL and update.args["ts"] == posted["ts"]
    message = bot.fake.messages[(CHANNEL, posted["ts"])]
    assert "the next slot frees <!date^" in str(message["blocks"])

    # Someone else may look but not ask.
    mark = bot.fake.mark()
    await bot.slack.click_message(CHANNEL, posted["ts"], L.request_increase, user="U_OTHER")
    refusal = await bot.fake.wait_for("chat.postEphemeral", after=mark)
    assert f"Only <@{LEAD}> or a manager can change the limits" in refusal.args["text"]

    # The creator gets the limits modal, prefilled with what would have let the deferred ones go.
    mark = bot.fake.mark()
    await bot.slack.click_message(CHANNEL, posted["ts"], L.request_increase, user=LEAD)
    form = await bot.loaded_form(mark, L.callback)
    state = form["state"]["values"]
    assert state[L.hourly_limit]["value"]["value"] == "10"  # 3 + 7 deferred
    assert "deferred 7 recipient(s) for the hourly limit" in state[L.reason]["value"]["value"]
    ack = await bot.slack.submit(form["id"], user=LEAD)
    assert ack.response_action == "update" and "now sends at most" in str(ack.body)
    async with bot.db.session() as session:
        assert (await session.get(Identity, identity.id)).hourly_limit == 10  # type: ignore[union-attr]
    assert not bot.fake.warnings
