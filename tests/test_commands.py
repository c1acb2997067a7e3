"""/identity help, list, unknown subcommands, and the global error handler."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import LEAD, PLATFORM_DOMAIN, Bot


async def create_identity(bot: Bot, name: str, local: str, **fields: str) -> None:
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], display_name=name, address=f"{local}@{PLATFORM_DOMAIN}", **fields)
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body


async def test_help_lists_the_commands(sqlite_bot: Bot) -> None:
    for text_ in ("help", ""):
        ack = await sqlite_bot.slack.command(text_)
        assert ack.status == 200
        assert ack.body["response_type"] == "ephemeral"
        assert "/identity new" in str(ack.body["blocks"]) and "/identity list" in str(ack.body["blocks"])


async def test_unknown_subcommand_gets_usage(sqlite_bot: Bot) -> None:
    ack = await sqlite_bot.slack.command("frobnicate now")
    assert ack.body["response_type"] == "ephemeral"
    assert "frobnicate" in ack.body["text"]
    assert "/identity new" in str(ack.body["blocks"])


async def test_list_shows_this_workspaces_identities_with_status(bot: Bot) -> None:
    mark = bot.fake.mark()
    await bot.slack.command("list")
    empty = await bot.fake.wait_for_response()
    assert "No email identities" in empty["text"]
    await create_identity(bot, "Jane Doe", "jane.doe")
    await create_identity(bot, "Max Mustermann", "max")
    n = len(bot.fake.responses)
    await bot.slack.command("list", user=LEAD)
    listing = await bot.fake.wait_for_response(after=n)
    blocks = str(listing["blocks"])
    assert listing["response_type"] == "ephemeral"
    assert f"jane.doe@{PLATFORM_DOMAIN}" in blocks and f"max@{PLATFORM_DOMAIN}" in blocks
    assert blocks.count("Not verified") == 2
    assert mark >= 0


async def test_an_unexpected_failure_tells_the_user_instead_of_going_silent(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    async with bot.db.transaction() as session:
        await session.execute(text("DROP TABLE audit_events"))
        await session.execute(text("DROP TABLE limit_requests"))
        await session.execute(text("DROP TABLE identities"))
    mark = bot.fake.mark()
    ack = await bot.slack.command("list", channel="C_TEAM")
    assert ack.status == 200
    note = await bot.fake.wait_for("chat.postEphemeral", after=mark)
    assert note.args["user"] == LEAD
    assert "Something went wrong" in note.args["text"]
