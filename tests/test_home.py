"""The App Home end to end through the Slack emulator: what it shows a member and a manager, republishing when
something it shows changes, its buttons, and paging past Slack's 100-block limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox import FakeSlack
from bot.sandbox.slack_api import VIEW_BLOCK_LIMIT
from handlers.credentials.ids import Credentials as C
from handlers.home.ids import Home as H
from handlers.limits.ids import Limits as L
from models import Identity, LimitRequest
from tests.conftest import LEAD, PLATFORM_DOMAIN, Bot, start_bot
from tests.gateway_helpers import make_identity

MANAGER = "U_MANAGER"
MEMBER = "U_OTHER"
FULL = [H.show, H.verify, H.edit, L.open, C.open]


@pytest.fixture
async def hbot(tmp_path: Path, database_url: str, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    bot = await start_bot(tmp_path, database_url, fake_slack, MANAGERS=MANAGER)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def identity(bot: Bot, local: str, *, by: str = LEAD) -> Identity:
    made = await make_identity(bot.db, f"{local}@{PLATFORM_DOMAIN}")
    async with bot.db.transaction() as session:
        row = await session.get(Identity, made.id)
        assert row is not None
        row.created_by = by
    made.created_by = by
    return made


async def published(bot: Bot, user: str, *, after: int, predicate: Any = None) -> dict[str, Any]:
    call = await bot.fake.wait_for(
        "views.publish",
        lambda c: c.args.get("user_id") == user and (predicate is None or predicate(c.response.get("view", {}))),
        after=after,
    )
    assert call.ok, call.response
    return call.response["view"]


async def open_home(bot: Bot, user: str) -> dict[str, Any]:
    mark = bot.fake.mark()
    ack = await bot.slack.open_home(user)
    assert ack.status == 200
    return await published(bot, user, after=mark)


def buttons(view: dict[str, Any], identity_id: int) -> list[str]:
    block = next(b for b in view["blocks"] if b.get("block_id") == H.identity_actions(identity_id))
    return [e["action_id"] for e in block["elements"]]


def text_of(view: dict[str, Any], block_id: str) -> str:
    return next(b["text"]["text"] for b in view["blocks"] if b.get("block_id") == block_id)


async def test_the_home_tab_shows_each_viewer_what_they_may_do_and_follows_changes(hbot: Bot) -> None:
    jane = await identity(hbot, "jane", by=LEAD)
    max_ = await identity(hbot, "max", by=MEMBER)
    async with hbot.db.transaction() as session:
        session.add(
            LimitRequest(
                identity_id=jane.id,
                requested_by=LEAD,
                previous_hourly=40,
                previous_daily=200,
                requested_hourly=60,
                requested_daily=240,
                reason="Launch week",
            )
        )

    member = await open_home(hbot, MEMBER)
    identity_blocks = [
        b["block_id"] for b in member["blocks"] if str(b.get("block_id", "")).startswith("home-identity")
    ]
    assert identity_blocks == [
        H.identity_block(max_.id),
        H.identity_actions(max_.id),
        H.identity_block(jane.id),
        H.identity_actions(jane.id),
    ]  # newest first
    assert buttons(member, jane.id) == [H.show]  # someone else's identity: look only
    assert buttons(member, max_.id) == FULL  # their own
    assert "Ready to use" in text_of(member, H.identity_block(jane.id))
    assert "Last hour *0* of 40" in text_of(member, H.identity_block(jane.id))
    assert "waiting for a manager" in text_of(member, H.identity_block(jane.id))
    assert not any(b.get("block_id", "").startswith("home-request-") for b in member["blocks"])

    manager = await open_home(hbot, MANAGER)
    assert buttons(manager, jane.id) == FULL and buttons(manager, max_.id) == FULL
    [request_actions] = [b for b in manager["blocks"] if b.get("block_id", "").startswith("home-request-")]
    assert [e["action_id"] for e in request_actions["elements"]] == [L.approve, L.deny]

    # A status change republishes both tabs (at once: nothing was republished for a change yet).
    mark = hbot.fake.mark()
    await hbot.slack.command(f"disable jane@{PLATFORM_DOMAIN}", user=LEAD)
    disabled = await published(hbot, MEMBER, after=mark, predicate=lambda v: "Disabled" in str(v.get("blocks")))
    assert "Disabled" in text_of(disabled, H.identity_block(jane.id))
    await published(hbot, MANAGER, after=mark, predicate=lambda v: "Disabled" in str(v.get("blocks")))

    # The manager approves from the Home tab: the request leaves it.
    home_id = hbot.fake.home[MANAGER]
    mark = hbot.fake.mark()
    await hbot.slack.click_view(home_id, L.approve, user=MANAGER, block_id=request_actions["block_id"])
    after = await published(hbot, MANAGER, after=mark, predicate=lambda v: "home-request-" not in str(v.get("blocks")))
    assert "60 emails (recipients) per hour" not in text_of(after, H.identity_block(jane.id))
    assert "Last hour *0* of 60" in text_of(after, H.identity_block(jane.id))


async def test_home_buttons_open_the_same_modals_as_the_commands(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    jane = await identity(bot, "jane")
    await open_home(bot, LEAD)
    home_id = bot.fake.home[LEAD]

    mark = bot.fake.mark()
    await bot.slack.click_view(home_id, H.new_identity, user=LEAD)
    opened = await bot.fake.wait_for("views.open", after=mark)
    assert opened.ok and opened.response["view"]["callback_id"] == "identity-form"

    mark = bot.fake.mark()
    await bot.slack.click_view(home_id, H.show, user=LEAD, value=str(jane.id))
    shown = await bot.fake.wait_for("views.open", after=mark)
    assert shown.ok and f"jane@{PLATFORM_DOMAIN}" in str(shown.response["view"]["blocks"])

    mark = bot.fake.mark()
    await bot.slack.click_view(home_id, L.open, user=LEAD, value=str(jane.id))
    form = await bot.loaded_form(mark, L.callback)
    assert form["private_metadata"] == str(jane.id)

    mark = bot.fake.mark()
    await bot.slack.click_view(home_id, H.edit, user=LEAD, value=str(jane.id))
    edit = await bot.loaded_form(mark, "identity-form")
    assert "Edit" in edit["title"]["text"]


async def test_120_identities_are_paged_within_slacks_limits(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    made = [await identity(bot, f"sender{n:03d}") for n in range(120)]
    first = await open_home(bot, LEAD)
    assert len(first["blocks"]) <= VIEW_BLOCK_LIMIT
    shown_first = {b["block_id"] for b in first["blocks"] if str(b.get("block_id", "")).startswith("home-identity")}
    assert "Page 1 of 6" in str(first["blocks"])
    assert H.identity_block(made[-1].id) in shown_first  # newest first

    mark = bot.fake.mark()
    await bot.slack.click_view(bot.fake.home[LEAD], H.page, user=LEAD, value="5")
    last = await published(bot, LEAD, after=mark)
    assert len(last["blocks"]) <= VIEW_BLOCK_LIMIT and "Page 6 of 6" in str(last["blocks"])
    assert H.identity_block(made[0].id) in {b.get("block_id") for b in last["blocks"]}
    # The page is remembered: opening the tab again shows where they were.
    again = await open_home(bot, LEAD)
    assert "Page 6 of 6" in str(again["blocks"])
    assert not bot.fake.warnings
