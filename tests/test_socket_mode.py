"""Socket Mode end to end: the bot connects to the fake Slack over a websocket (apps.connections.open with the
app-level token), commands and interactions arrive as envelopes, and acks go back over the same socket.

The first tests check the emulator's side of the protocol with slack_sdk's own socket-mode client; the rest run the
bot in-process with SLACK_APP_TOKEN set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import func, select

from bot.sandbox import FakeSlack, SlackClient
from handlers.identity.ids import IdentityForm as F
from models import AuditEvent, Identity
from tests.conftest import APP_TOKEN, BOT_TOKEN, CHANNEL, PLATFORM_DOMAIN, SIGNING_SECRET, TEAM, Bot, start_bot
from tests.test_identity_new import auto_create, input_block

WAIT = 5.0  # bound on every wait below; nothing is timed


async def api_error(coro: Any) -> str:
    with pytest.raises(SlackApiError) as info:
        await coro
    return str(info.value.response["error"])


# ---------------------------------------------------------------------- the emulator's Socket Mode protocol


async def test_apps_connections_open_takes_only_the_app_level_token(fake_slack: FakeSlack) -> None:
    api = AsyncWebClient(base_url=fake_slack.url)
    res = await api.apps_connections_open(app_token=APP_TOKEN)
    base = fake_slack.url.removesuffix("/api/").replace("http://", "ws://")
    assert res["url"].startswith(f"{base}/socket/")
    assert await api_error(api.apps_connections_open(app_token=BOT_TOKEN)) == "not_allowed_token_type"
    assert await api_error(api.apps_connections_open(app_token="xapp-not-the-token")) == "invalid_auth"
    # The app-level token is good for nothing else.
    assert await api_error(AsyncWebClient(token=APP_TOKEN, base_url=fake_slack.url).auth_test()) == (
        "not_allowed_token_type"
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(fake_slack.url + "apps.connections.open") as resp:
            assert (await resp.json())["error"] == "not_authed"
    # A fake without an app token refuses every app token.
    async with FakeSlack() as no_socket_mode:
        other = AsyncWebClient(base_url=no_socket_mode.url)
        assert await api_error(other.apps_connections_open(app_token=APP_TOKEN)) == "invalid_auth"


async def test_a_socket_url_is_good_for_one_connection_and_starts_with_hello(fake_slack: FakeSlack) -> None:
    url = (await AsyncWebClient(base_url=fake_slack.url).apps_connections_open(app_token=APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=WAIT)
            assert hello["type"] == "hello"
            assert hello["num_connections"] == 1
            assert hello["connection_info"] == {"app_id": fake_slack.app_id}
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(url)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url.rsplit("/", 1)[0] + "/not-a-ticket")


class SdkApp:
    """slack_sdk's own aiohttp socket-mode client, acking every envelope (echoing the payload when allowed)."""

    def __init__(self, fake: FakeSlack) -> None:
        self.client = SocketModeClient(app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=fake.url))
        self.messages: list[dict[str, Any]] = []
        self.requests: list[SocketModeRequest] = []
        self.hello = asyncio.Event()
        self.client.message_listeners.append(self._on_message)
        self.client.socket_mode_request_listeners.append(self._on_request)

    async def _on_message(self, _client: Any, message: dict[str, Any], _raw: str | None) -> None:
        self.messages.append(message)
        if message.get("type") == "hello":
            self.hello.set()

    async def _on_request(self, client: Any, req: SocketModeRequest) -> None:
        self.requests.append(req)
        payload = {"echo": req.payload} if req.accepts_response_payload else None
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=payload))


@pytest.fixture
async def sdk_app(fake_slack: FakeSlack) -> AsyncIterator[SdkApp]:
    app = SdkApp(fake_slack)
    await app.client.connect()
    yield app
    await app.client.close()


async def test_slack_sdks_client_gets_hello_envelopes_and_acks(fake_slack: FakeSlack, sdk_app: SdkApp) -> None:
    conn = await fake_slack.wait_for_socket(timeout=WAIT)
    await asyncio.wait_for(sdk_app.hello.wait(), WAIT)

    command = {"command": "/identity", "text": "list", "user_id": "U_LEAD"}
    sent = await fake_slack.send_envelope("slash_commands", command, accepts_response_payload=True, timeout=WAIT)
    assert sent.acked and sent.ack_payload == {"echo": command}
    assert sent.connection_id == conn.id
    click = {"type": "block_actions", "actions": [{"action_id": "x"}]}
    sent = await fake_slack.send_envelope("interactive", click, accepts_response_payload=False, timeout=WAIT)
    assert sent.acked and sent.ack_payload is None
    event = {"type": "event_callback", "event": {"type": "app_home_opened", "user": "U_LEAD"}}
    sent = await fake_slack.send_envelope(
        "events_api", event, accepts_response_payload=False, retry_attempt=1, retry_reason="timeout", timeout=WAIT
    )
    assert sent.acked
    assert [(r.type, r.payload) for r in sdk_app.requests] == [
        ("slash_commands", command),
        ("interactive", click),
        ("events_api", event),
    ]
    assert (sdk_app.requests[-1].retry_attempt, sdk_app.requests[-1].retry_reason) == (1, "timeout")
    assert [e.envelope_id for e in fake_slack.envelopes] == [r.envelope_id for r in sdk_app.requests]
    assert not fake_slack.warnings


async def test_ping_pong_both_ways(fake_slack: FakeSlack, sdk_app: SdkApp) -> None:
    conn = await fake_slack.wait_for_socket(timeout=WAIT)
    # The client pings once as soon as it connects; its ack of an envelope comes after that ping on the same
    # stream, so once the ack is in, the fake has seen the ping and sent its pong.
    await fake_slack.send_envelope("interactive", {"type": "block_actions"}, accepts_response_payload=False)
    assert conn.pings and conn.pings[0].startswith(b"sdk-ping-pong:")
    # The pong went out before this envelope, so the client has read it when it acks.
    await fake_slack.send_envelope("interactive", {"type": "block_actions"}, accepts_response_payload=False)
    assert sdk_app.client.last_ping_pong_time == float(conn.pings[0].split(b":", 1)[1])
    assert await sdk_app.client.is_connected()
    # Slack's own pings are answered too.
    assert await fake_slack.ping_socket(b"fake-slack-ping", timeout=WAIT) is conn


@pytest.mark.parametrize("reason", ["warning", "refresh_requested"])
async def test_disconnect_message_makes_the_client_move_to_a_new_connection(
    fake_slack: FakeSlack, sdk_app: SdkApp, reason: str
) -> None:
    old = await fake_slack.wait_for_socket(timeout=WAIT)
    told = await fake_slack.socket_disconnect(reason)
    assert told == [old]
    new = await fake_slack.wait_for_socket(after=1, timeout=WAIT)
    await fake_slack.wait_socket_closed(old, timeout=WAIT)  # the client closes the old one itself
    assert len(fake_slack.calls_to("apps.connections.open")) == 2
    sent = await fake_slack.send_envelope("slash_commands", {"text": "hi"}, accepts_response_payload=True)
    assert sent.acked and sent.connection_id == new.id
    assert not fake_slack.warnings


async def test_client_reconnects_when_slack_closes_the_socket(fake_slack: FakeSlack, sdk_app: SdkApp) -> None:
    old = await fake_slack.wait_for_socket(timeout=WAIT)
    await fake_slack.close_sockets()
    new = await fake_slack.wait_for_socket(after=1, timeout=WAIT)
    assert old.closed and new is not old
    sent = await fake_slack.send_envelope("slash_commands", {"text": "hi"}, accepts_response_payload=True)
    assert sent.acked and sent.connection_id == new.id


async def test_socket_client_reports_a_missing_ack(fake_slack: FakeSlack) -> None:
    """An app that never acks: SlackClient answers 504 and records a warning instead of hanging."""
    url = (await AsyncWebClient(base_url=fake_slack.url).apps_connections_open(app_token=APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive_json(timeout=WAIT)  # hello
        await fake_slack.wait_for_socket(timeout=WAIT)
        slack = SlackClient.socket_mode(fake_slack, request_timeout=0.2)
        ack = await slack.command("list")
        assert (ack.status, ack.body) == (504, None)
        assert "no Socket Mode ack" in fake_slack.warnings[-1]
        sent = await ws.receive_json(timeout=WAIT)
        assert sent["type"] == "slash_commands" and sent["accepts_response_payload"] is True
        assert sent["payload"]["command"] == "/identity" and sent["payload"]["text"] == "list"


# ---------------------------------------------------------------------- the bot in Socket Mode


@pytest.fixture
async def socket_bot(tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    b = await start_bot(tmp_path, sqlite_url, fake_slack, SLACK_APP_TOKEN=APP_TOKEN)
    assert b.slack.socket
    yield b
    await b.slack.close()
    await b.runtime.stop()


async def count(bot: Bot, model: type) -> int:
    async with bot.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_new_identity_over_the_socket(socket_bot: Bot) -> None:
    bot = socket_bot
    opened = bot.fake.calls_to("apps.connections.open")
    # Once to check the token at start-up, once to connect.
    assert [c.ok for c in opened] == [True, True], "the bot asked for a websocket URL with its app token"
    view = await bot.open_new_identity_form()
    assert view["title"]["text"] == "New email identity"
    assert input_block(view, F.notices_channel)["element"]["initial_conversation"] == CHANNEL

    await bot.fill_platform_form(view["id"], display_name="Jane Doe")
    updated = await auto_create(bot, view["id"])
    assert input_block(updated, F.address)["element"]["initial_value"] == f"jane.doe@{PLATFORM_DOMAIN}"
    mark = bot.fake.mark()
    ack = await bot.slack.submit(view["id"])
    assert ack.status == 200
    assert ack.response_action == "update", ack.body
    assert "Identity saved" in str(ack.body["view"])
    assert bot.fake.views[view["id"]]["title"] == ack.body["view"]["title"], "the fake applied the socket ack"

    post = await bot.fake.wait_for("chat.postMessage", after=mark)
    assert post.args["channel"] == CHANNEL
    assert "Jane Doe" in post.args["text"] and "Not verified" in post.args["text"]
    assert f"jane.doe@{PLATFORM_DOMAIN}" in str(post.args["blocks"])

    envelopes = bot.fake.envelopes
    assert [(e.type, e.payload.get("type"), e.accepts_response_payload, e.acked) for e in envelopes] == [
        ("slash_commands", None, True, True),
        ("interactive", "block_actions", False, True),
        ("interactive", "view_submission", True, True),
    ]
    assert envelopes[0].payload["command"] == "/identity" and envelopes[0].payload["text"] == "new"
    assert not bot.fake.warnings
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity))
        assert identity is not None
        assert (identity.display_name, identity.address, identity.team_id) == (
            "Jane Doe",
            f"jane.doe@{PLATFORM_DOMAIN}",
            TEAM,
        )


async def test_invalid_submission_gets_errors_back_through_the_socket_ack(socket_bot: Bot) -> None:
    bot = socket_bot
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], display_name="", address=f"jane.doe@{PLATFORM_DOMAIN}")
    ack = await bot.slack.submit(view["id"])
    assert ack.status == 200
    assert ack.response_action == "errors", ack.body
    target = input_block(bot.fake.views[view["id"]], F.display_name)["block_id"]
    assert "Enter the sender's display name" in ack.errors[target]
    assert bot.fake.is_open(view["id"]), "errors keep the modal open"
    assert bot.fake.envelopes[-1].ack_payload == ack.body
    assert not bot.fake.warnings
    assert await count(bot, Identity) == 0
    assert await count(bot, AuditEvent) == 0


async def test_http_serves_health_but_not_slack_events(socket_bot: Bot) -> None:
    bot = socket_bot
    url = bot.runtime.http_url
    assert url
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"ok": True}
    http = SlackClient(url, SIGNING_SECRET, bot.fake, team_id=TEAM)
    try:
        mark = bot.fake.mark()
        refused = await http.command("new")
        assert refused.status == 404, "a correctly signed request over HTTP is not served in Socket Mode"
        assert bot.fake.calls[mark:] == [] and bot.fake.envelopes == []
    finally:
        await http.close()
    # The socket still works.
    view = await bot.open_new_identity_form()
    assert view["title"]["text"] == "New email identity"


async def test_the_bot_follows_a_connection_refresh(socket_bot: Bot) -> None:
    bot = socket_bot
    old = await bot.fake.wait_for_socket(timeout=WAIT)
    await bot.fake.socket_disconnect("refresh_requested")
    new = await bot.fake.wait_for_socket(after=1, timeout=WAIT)
    await bot.fake.wait_socket_closed(old, timeout=WAIT)
    view = await bot.open_new_identity_form()
    assert view["title"]["text"] == "New email identity"
    assert bot.fake.envelopes[-1].connection_id == new.id
    assert [c.ok for c in bot.fake.calls_to("apps.connections.open")] == [True, True, True]  # check, connect, refresh


async def test_stopping_the_bot_closes_its_socket(tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack) -> None:
    bot = await start_bot(tmp_path, sqlite_url, fake_slack, SLACK_APP_TOKEN=APP_TOKEN)
    conn = await fake_slack.wait_for_socket(timeout=WAIT)
    await bot.runtime.stop()
    await fake_slack.wait_socket_closed(conn, timeout=WAIT)
    assert fake_slack.live_sockets() == []
    assert len(fake_slack.calls_to("apps.connections.open")) == 2, "check and connect; no reconnect after a stop"
