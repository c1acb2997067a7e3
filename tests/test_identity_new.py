"""`/identity new` end to end: signed HTTP requests in, Web API calls out, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from handlers.identity.ids import IdentityForm as F
from models import AuditEvent, Identity, IdentityStatus, LimitRequest, LimitRequestStatus
from tests.conftest import CHANNEL, LEAD, PLATFORM_DOMAIN, TEAM, Bot


def input_block(view: dict, base: str) -> dict:
    for block in view["blocks"]:
        if block.get("block_id", "").split("#")[0] == base and block["type"] == "input":
            return block
    raise AssertionError(f"no input block {base} in {[b.get('block_id') for b in view['blocks']]}")


async def count(bot: Bot, model: type) -> int:
    async with bot.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def auto_create(bot: Bot, view_id: str) -> dict:
    mark = bot.fake.mark()
    ack = await bot.slack.click_view(view_id, F.auto_create)
    assert ack.status == 200
    call = await bot.fake.wait_for("views.update", after=mark)
    assert call.ok, call.response
    return call.response["view"]


async def test_new_identity_from_command_to_channel_message(bot: Bot) -> None:
    view = await bot.open_new_identity_form()
    assert view["title"]["text"] == "New email identity"
    assert view["submit"]["text"] == "Save changes"
    # Defaults are prefilled; the notices channel defaults to where the command ran.
    assert input_block(view, F.hourly_limit)["element"]["initial_value"] == "40"
    assert input_block(view, F.daily_limit)["element"]["initial_value"] == "200"
    assert input_block(view, F.notices_channel)["element"]["initial_conversation"] == CHANNEL

    await bot.fill_platform_form(view["id"], display_name="Jane Doe")
    updated = await auto_create(bot, view["id"])
    assert input_block(updated, F.address)["element"]["initial_value"] == f"jane.doe@{PLATFORM_DOMAIN}"
    # What was typed elsewhere is still there after the update.
    mark = bot.fake.mark()
    ack = await bot.slack.submit(view["id"])
    assert ack.status == 200
    assert ack.body["response_action"] == "update", ack.body
    assert "Identity saved" in str(ack.body["view"])

    post = await bot.fake.wait_for("chat.postMessage", after=mark)
    assert post.args["channel"] == CHANNEL
    assert "Jane Doe" in post.args["text"] and "Not verified" in post.args["text"]
    blocks = str(post.args["blocks"])
    assert f"jane.doe@{PLATFORM_DOMAIN}" in blocks
    assert "Acme Inc." in blocks and "jane@acme.example.com" in blocks
    assert "<!date^" in blocks and "UTC>" in blocks, "creation time is a Slack date token with a UTC fallback"
    assert "40 emails (recipients) per hour · 200 per day" in blocks
    assert not bot.fake.warnings

    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity))
        assert identity is not None
        assert (identity.kind, identity.display_name, identity.company_name) == (
            "platform",
            "Jane Doe",
            "Acme Inc.",
        )
        assert identity.address == f"jane.doe@{PLATFORM_DOMAIN}"
        assert (identity.hourly_limit, identity.daily_limit) == (40, 200)
        assert identity.forwarding_address == "jane@acme.example.com"
        assert (identity.notices_channel, identity.created_by, identity.team_id) == (CHANNEL, LEAD, TEAM)
        assert identity.status == IdentityStatus.NOT_VERIFIED
        events = (await session.scalars(select(AuditEvent))).all()
        assert [(e.action, e.actor, e.identity_id) for e in events] == [("identity.created", LEAD, identity.id)]


async def test_auto_create_adds_a_number_when_the_address_is_taken(bot: Bot) -> None:
    for expected in ("jane.doe", "jane.doe2"):
        view = await bot.open_new_identity_form()
        await bot.fill_platform_form(view["id"], display_name="Jane Doe")
        updated = await auto_create(bot, view["id"])
        assert input_block(updated, F.address)["element"]["initial_value"] == f"{expected}@{PLATFORM_DOMAIN}"
        ack = await bot.slack.submit(view["id"])
        assert ack.body["response_action"] == "update", ack.body
    assert await count(bot, Identity) == 2


async def test_auto_create_without_a_display_name_says_what_to_do(bot: Bot) -> None:
    view = await bot.open_new_identity_form()
    updated = await auto_create(bot, view["id"])
    assert "Enter the sender's display name first" in str(updated["blocks"])


async def test_local_part_alone_is_completed_with_the_platform_domain(bot: Bot) -> None:
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address="Sales.Team")
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        assert await session.scalar(select(Identity.address)) == f"sales.team@{PLATFORM_DOMAIN}"


INVALID = [
    ({"display_name": ""}, F.display_name, "Enter the sender's display name"),
    ({"display_name": "Jane\nDoe"}, F.display_name, "line breaks"),
    ({"display_name": "Jane\rBcc: victim@example.com"}, F.display_name, "line breaks"),
    ({"display_name": "J" * 101}, F.display_name, "at most 100"),
    ({"company_name": ""}, F.company_name, "Enter the sender company name"),
    ({"company_name": "Acme\r\nX-Injected: yes"}, F.company_name, "line breaks"),
    ({"company_name": "A" * 120}, F.company_name, "at most 100"),
    ({"address": ""}, F.address, "Auto create"),
    ({"address": "jane..doe@@x"}, F.address, "not a valid email address"),
    ({"address": "jane@gmail.com"}, F.address, f"ending in @{PLATFORM_DOMAIN}"),
    ({"address": "jane\n@platform.example.com"}, F.address, "line breaks"),
    ({"forwarding_address": "not-an-address"}, F.forwarding_address, "not a valid email address"),
    ({"forwarding_address": f"x@{PLATFORM_DOMAIN}"}, F.forwarding_address, "outside the platform"),
    ({"hourly_limit": "abc"}, F.hourly_limit, "whole number"),
    ({"hourly_limit": "0"}, F.hourly_limit, "at least 1"),
    ({"hourly_limit": "2.5"}, F.hourly_limit, "whole number"),
    ({"hourly_limit": "-3"}, F.hourly_limit, "whole number"),
    ({"daily_limit": ""}, F.daily_limit, "Enter the daily limit"),
    ({"daily_limit": "251"}, F.daily_limit, "at most 250"),
    ({"hourly_limit": "100", "daily_limit": "50"}, F.hourly_limit, "can't be more than the daily limit (50)"),
]


@pytest.mark.parametrize(("fields", "block", "message"), INVALID, ids=[f"{b}:{m}" for _, b, m in INVALID])
async def test_invalid_input_is_shown_on_the_right_input_and_stores_nothing(
    sqlite_bot: Bot, fields: dict[str, str], block: str, message: str
) -> None:
    bot = sqlite_bot
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], **{"address": f"jane.doe@{PLATFORM_DOMAIN}", **fields})
    ack = await bot.slack.submit(view["id"])
    assert ack.status == 200
    assert ack.body["response_action"] == "errors", ack.body
    current = bot.fake.views[view["id"]]
    target = input_block(current, block)["block_id"]
    assert message in ack.body["errors"][target], ack.body["errors"]
    assert set(ack.body["errors"]) <= {b["block_id"] for b in current["blocks"] if b["type"] == "input"}
    assert await count(bot, Identity) == 0
    assert await count(bot, AuditEvent) == 0


async def test_a_taken_address_is_refused_on_the_address_input(bot: Bot) -> None:
    for _ in range(2):
        view = await bot.open_new_identity_form()
        await bot.fill_platform_form(view["id"], address=f"team@{PLATFORM_DOMAIN}")
        ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors"
    assert "already taken" in ack.body["errors"][F.address]
    assert await count(bot, Identity) == 1


async def test_limits_above_the_defaults_become_a_pending_request(bot: Bot) -> None:
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(
        view["id"], address=f"jane.doe@{PLATFORM_DOMAIN}", hourly_limit="60", daily_limit="250"
    )
    mark = bot.fake.mark()
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update"
    assert "waiting for a manager" in str(ack.body["view"])
    post = await bot.fake.wait_for("chat.postMessage", after=mark, predicate=lambda c: c.args["channel"] == CHANNEL)
    assert "Increase to 60 emails (recipients) per hour · 250 per day requested" in str(post.args["blocks"])
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity))
        assert (identity.hourly_limit, identity.daily_limit) == (40, 200), "runs on the defaults until approved"
        request = await session.scalar(select(LimitRequest))
        assert (request.requested_hourly, request.requested_daily, request.status) == (
            60,
            250,
            LimitRequestStatus.PENDING,
        )
        assert request.requested_by == LEAD


async def test_the_same_submission_twice_creates_one_identity(bot: Bot) -> None:
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=f"jane.doe@{PLATFORM_DOMAIN}")
    mark = bot.fake.mark()
    # A double click and a retry: three deliveries of the same view_submission, built before any ack.
    acks = await asyncio.gather(*(bot.slack.submit(view["id"]) for _ in range(3)))
    for ack in acks:
        assert ack.status == 200
        assert ack.body["response_action"] == "update", ack.body
    await bot.fake.wait_for("chat.postMessage", after=mark)
    assert await count(bot, Identity) == 1
    assert await count(bot, AuditEvent) == 1
    assert len([c for c in bot.fake.calls[mark:] if c.method == "chat.postMessage"]) == 1


async def test_wrong_signature_and_stale_timestamp_are_refused_and_store_nothing(bot: Bot) -> None:
    import time

    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=f"jane.doe@{PLATFORM_DOMAIN}")
    mark = bot.fake.mark()
    bad = await bot.slack.submit(view["id"], signing_secret="not-the-secret")
    stale = await bot.slack.submit(view["id"], timestamp=int(time.time()) - 301)
    assert (bad.status, stale.status) == (401, 401)
    cmd = await bot.slack.command("list", signing_secret="not-the-secret")
    assert cmd.status == 401
    assert await count(bot, Identity) == 0
    assert bot.fake.calls[mark:] == []
    # The genuine request still works afterwards.
    ok = await bot.slack.submit(view["id"])
    assert ok.body["response_action"] == "update"
    assert await count(bot, Identity) == 1


async def test_post_to_a_channel_the_bot_cannot_reach_tells_the_creator(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    bot.fake.unreachable_channels.add("C_PRIVATE")
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=f"jane.doe@{PLATFORM_DOMAIN}", notices_channel="C_PRIVATE")
    mark = bot.fake.mark()
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update"
    dm = await bot.fake.wait_for("chat.postMessage", after=mark, predicate=lambda c: c.ok and c.args["channel"] == LEAD)
    assert "/invite @Identity Bot" in dm.args["text"]
    assert await count(bot, Identity) == 1
