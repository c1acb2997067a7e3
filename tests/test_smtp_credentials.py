"""*Get SMTP credentials* end to end: the creator gets the gateway's settings and a username and password that the
gateway accepts, in a modal and nowhere else; issuing again (confirmed) revokes the old ones; a stranger is refused."""

from __future__ import annotations

import logging
import re

import aiosmtplib
import pytest

from handlers.credentials.ids import Credentials as C
from tests.conftest import CHANNEL, LEAD, PLATFORM_DOMAIN, Bot
from tests.gateway_helpers import make_identity

ADDRESS = f"jane@{PLATFORM_DOMAIN}"


def settings_in(view: dict) -> dict[str, str]:
    text = str(view["blocks"])
    return {k: v for k, v in re.findall(r"\*(Server|Port|Username|Password)\* `([^`]+)`", text)}


async def panel(bot: Bot) -> str:
    mark = bot.fake.mark()
    await bot.slack.command(f"verify {ADDRESS}")
    call = await bot.fake.wait_for("chat.postMessage", lambda c: c.args.get("channel") == CHANNEL, after=mark)
    return call.response["ts"]


async def get_credentials(bot: Bot, ts: str, *, user: str = LEAD) -> dict:
    mark = bot.fake.mark()
    await bot.slack.click_message(CHANNEL, ts, C.open, user=user)
    call = await bot.fake.wait_for("views.update", lambda c: c.ok, after=mark)
    return call.response["view"]


async def login(bot: Bot, username: str, password: str) -> int:
    gateway = bot.runtime.gateway
    client = aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.login(username, password)
        await client.mail(ADDRESS)
        return 250
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    finally:
        client.close()


async def test_the_creator_gets_working_credentials_shown_once_and_can_replace_them(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await make_identity(bot.db, ADDRESS)
    ts = await panel(bot)

    shown = await get_credentials(bot, ts)
    first = settings_in(shown)
    assert shown["clear_on_close"] is True and shown["private_metadata"] == ""
    assert first["Server"] == "127.0.0.1" and first["Port"] == str(bot.runtime.gateway.port)
    assert await login(bot, first["Username"], first["Password"]) == 250

    # Again: a confirmation says the current ones stop working, then new ones are shown.
    confirm = await get_credentials(bot, ts)
    assert confirm["callback_id"] == C.confirm_callback
    assert first["Username"] in str(confirm["blocks"]) and "revokes these at once" in str(confirm["blocks"])
    ack = await bot.slack.submit(confirm["id"])
    second = settings_in(ack.body["view"])  # type: ignore[index]
    assert second["Username"] != first["Username"]
    assert await login(bot, first["Username"], first["Password"]) == 535
    assert await login(bot, second["Username"], second["Password"]) == 250

    # A stranger is told who can, and no modal opens.
    mark, opened = bot.fake.mark(), len(bot.fake.calls_to("views.open"))
    await bot.slack.click_message(CHANNEL, ts, C.open, user="U_OTHER")
    refusal = await bot.fake.wait_for("chat.postEphemeral", after=mark)
    assert f"Only <@{LEAD}> or a manager can get SMTP credentials" in refusal.args["text"]
    assert len(bot.fake.calls_to("views.open")) == opened

    # The channel hears a username was issued; the passwords are in no message, ephemeral or log line.
    notes = [c.args["text"] for c in bot.fake.calls_to("chat.postMessage") if "SMTP credentials" in c.args["text"]]
    assert len(notes) == 2 and second["Username"] in notes[1]
    for password in (first["Password"], second["Password"]):
        for call in bot.fake.calls:
            if call.method != "views.update":  # the modal itself
                assert password not in str(call.args) and password not in str(call.response)
        assert password not in str(bot.fake.responses) and password not in str(bot.fake.ephemerals)
        assert password not in caplog.text
    views_with_it = [v for v in bot.fake.views.values() if first["Password"] in str(v)]
    assert all(v["clear_on_close"] and not v["private_metadata"] for v in views_with_it)
