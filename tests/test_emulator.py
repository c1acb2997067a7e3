"""Behaviour tests of the Slack emulator (fake Web API + client playing Slack)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    InputBlock,
    Option,
    PlainTextInputElement,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.sandbox import FakeSlack, SlackClient

TOKEN = "xoxb-emulator-test"
SECRET = "emulator-signing-secret"


class Clock:
    """A hand-driven clock for trigger expiry."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeApp:
    """A tiny app standing in for the bot: verifies signatures and records what Slack sent."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    reply: Callable[[dict[str, Any]], web.Response] = lambda _: web.Response(status=200)
    verifier: SignatureVerifier = field(default_factory=lambda: SignatureVerifier(SECRET))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return web.Response(status=401, text="invalid signature")
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        parsed = json.loads(form["payload"]) if "payload" in form else form
        self.requests.append(parsed)
        return self.reply(parsed)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(token=TOKEN, clock=clock)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def api(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=fake.url)


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    fake_app = FakeApp()
    web_app = web.Application()
    web_app.router.add_post("/slack/events", fake_app.handle)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]
    fake_app.url = f"http://127.0.0.1:{port}"
    yield fake_app
    await runner.cleanup()


@pytest.fixture
async def slack(app: FakeApp, fake: FakeSlack) -> AsyncIterator[SlackClient]:
    client = SlackClient(app.url, SECRET, fake)
    yield client
    await client.close()


def modal(*blocks: Any, title: str = "Identity", submit: str | None = "Save", **kwargs: Any) -> dict[str, Any]:
    """A modal view dict built with the SDK models."""
    return View(type="modal", title=title, submit=submit, close="Cancel", blocks=list(blocks), **kwargs).to_dict()


def text_input(block_id: str, initial: str | None = None) -> InputBlock:
    return InputBlock(
        block_id=block_id,
        label="Label",
        element=PlainTextInputElement(action_id="value", initial_value=initial),
    )


async def slack_error(coro: Any) -> str:
    """The Slack error name a Web API call fails with."""
    with pytest.raises(SlackApiError) as info:
        await coro
    return str(info.value.response["error"])


# ---------------------------------------------------------------------- Web API


@pytest.mark.asyncio
async def test_auth(fake: FakeSlack, api: AsyncWebClient) -> None:
    res = await api.auth_test()
    assert res["user_id"] == "UBOT" and res["team_id"] == "T0TEST"
    bad = AsyncWebClient(token="xoxb-wrong", base_url=fake.url)
    assert await slack_error(bad.auth_test()) == "invalid_auth"
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.url + "auth.test") as resp:
            assert resp.status == 200
            assert (await resp.json())["error"] == "not_authed"
        async with session.post(fake.url + "nope.nope", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert (await resp.json())["error"] == "unknown_method"
    assert [c.ok for c in fake.calls] == [True, False, False, False]


@pytest.mark.asyncio
async def test_triggers_single_use_and_expiring(fake: FakeSlack, api: AsyncWebClient, clock: Clock) -> None:
    view = modal(text_input("name"))
    trigger = fake.issue_trigger_id()
    opened = await api.views_open(trigger_id=trigger, view=view)
    assert opened["view"]["id"].startswith("V") and opened["view"]["hash"]
    assert fake.views[opened["view"]["id"]]["state"] == {
        "values": {"name": {"value": {"type": "plain_text_input", "value": None}}}
    }
    assert await slack_error(api.views_open(trigger_id=trigger, view=view)) == "expired_trigger_id"
    assert await slack_error(api.views_open(trigger_id="123.456.abc", view=view)) == "invalid_trigger_id"
    stale = fake.issue_trigger_id()
    clock.now += 3.5
    assert await slack_error(api.views_open(trigger_id=stale, view=view)) == "expired_trigger_id"


@pytest.mark.asyncio
async def test_view_validation(fake: FakeSlack, api: AsyncWebClient) -> None:
    long_title = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "x" * 30},
        "blocks": [{"type": "divider"}],
    }
    with pytest.raises(SlackApiError) as info:
        await api.views_open(trigger_id=fake.issue_trigger_id(), view=long_title)
    assert info.value.response["error"] == "invalid_arguments"
    assert any("title" in m for m in info.value.response["response_metadata"]["messages"])
    duplicate = modal(text_input("a"), text_input("a"))
    assert await slack_error(api.views_open(trigger_id=fake.issue_trigger_id(), view=duplicate)) == "invalid_arguments"
    no_submit = modal(text_input("a"), submit=None)
    assert await slack_error(api.views_open(trigger_id=fake.issue_trigger_id(), view=no_submit)) == "invalid_arguments"
    metadata = {**modal(text_input("a")), "private_metadata": "m" * 3001}
    assert await slack_error(api.views_open(trigger_id=fake.issue_trigger_id(), view=metadata)) == "invalid_arguments"


@pytest.mark.asyncio
async def test_views_update_hash_and_push_limit(fake: FakeSlack, api: AsyncWebClient) -> None:
    opened = (await api.views_open(trigger_id=fake.issue_trigger_id(), view=modal(text_input("a"))))["view"]
    updated = (await api.views_update(view_id=opened["id"], hash=opened["hash"], view=modal(text_input("b"))))["view"]
    assert updated["id"] == opened["id"] and updated["hash"] != opened["hash"]
    stale = api.views_update(view_id=opened["id"], hash=opened["hash"], view=modal(text_input("c")))
    assert await slack_error(stale) == "hash_conflict"
    assert await slack_error(api.views_update(view_id="VNOPE", view=modal(text_input("c")))) == "not_found"
    for _ in range(2):
        await api.views_push(trigger_id=fake.issue_trigger_id(view_id=opened["id"]), view=modal(text_input("p")))
    assert len(fake.stack(opened["id"])) == 3
    push = api.views_push(trigger_id=fake.issue_trigger_id(view_id=opened["id"]), view=modal(text_input("p")))
    assert await slack_error(push) == "push_limit_reached"


@pytest.mark.asyncio
async def test_messages(fake: FakeSlack, api: AsyncWebClient) -> None:
    too_many = [{"type": "divider"}] * 51
    assert await slack_error(api.chat_postMessage(channel="C1", text="x", blocks=too_many)) == "invalid_blocks"
    with pytest.warns(UserWarning, match="top-level `text`"):
        assert await slack_error(api.chat_postMessage(channel="C1")) == "no_text"
    bad_button = [ActionsBlock(elements=[ButtonElement(text="b", action_id="a")]).to_dict()]
    bad_button[0]["elements"][0]["text"]["text"] = "b" * 80
    assert await slack_error(api.chat_postMessage(channel="C1", text="x", blocks=bad_button)) == "invalid_blocks"
    assert fake.warnings == []
    with pytest.warns(UserWarning, match="top-level `text`"):  # the SDK warns too
        posted = await api.chat_postMessage(channel="C1", blocks=[SectionBlock(text="hello").to_dict()])
    assert fake.warnings == ["chat.postMessage: blocks without top-level text"]
    dm = await api.chat_postMessage(channel="U_ANN", text="hi")
    assert dm["channel"] == "D_ANN"
    reply = await api.chat_postMessage(channel="C1", text="in thread", thread_ts=posted["ts"])
    assert float(reply["ts"]) > float(posted["ts"])
    await api.chat_update(channel="C1", ts=posted["ts"], text="edited")
    assert [m["text"] for m in fake.channel_messages("C1")] == ["edited", "in thread"]
    assert fake.channel_messages("C1")[0]["blocks"][0]["text"]["text"] == "hello"
    assert await slack_error(api.chat_update(channel="C1", ts="1.2", text="x")) == "message_not_found"
    await api.chat_postEphemeral(channel="C1", user="U_ANN", text="psst")
    assert fake.ephemerals[0]["user"] == "U_ANN"


@pytest.mark.asyncio
async def test_users_groups_dm(fake: FakeSlack, api: AsyncWebClient) -> None:
    fake.add_user("U_ANN", "ann", is_admin=True, tz="America/New_York")
    fake.add_usergroup("S1", ["U_ANN"])
    user = (await api.users_info(user="U_ANN"))["user"]
    assert user["is_admin"] and user["tz"] == "America/New_York" and user["tz_offset"] in (-18000, -14400)
    assert await slack_error(api.users_info(user="U_NOBODY")) == "user_not_found"
    assert (await api.usergroups_users_list(usergroup="S1"))["users"] == ["U_ANN"]
    assert await slack_error(api.usergroups_users_list(usergroup="S2")) == "no_such_subteam"
    assert (await api.conversations_open(users=["U_ANN"]))["channel"]["id"] == "D_ANN"


@pytest.mark.asyncio
async def test_wait_for(fake: FakeSlack, api: AsyncWebClient) -> None:
    await api.auth_test()
    assert (await fake.wait_for("auth.test")).ok
    mark = fake.mark()
    waiter = asyncio.create_task(fake.wait_for("chat.postMessage", lambda c: c.args["channel"] == "C2", after=mark))
    await api.chat_postMessage(channel="C1", text="not this one")
    assert not waiter.done()
    await api.chat_postMessage(channel="C2", text="this one")
    call = await asyncio.wait_for(waiter, 2)
    assert call.args["text"] == "this one" and call.ok
    with pytest.raises(AssertionError, match="chat.postMessage -> ok"):
        await fake.wait_for("views.open", after=mark, timeout=0.05)


@pytest.mark.asyncio
async def test_injected_rate_limit(fake: FakeSlack, api: AsyncWebClient) -> None:
    fake.inject_error("chat.postMessage", "ratelimited", status=429, retry_after=0)
    with pytest.raises(SlackApiError) as info:
        await api.chat_postMessage(channel="C1", text="x")
    assert info.value.response.status_code == 429
    assert fake.messages == {}
    assert (await api.chat_postMessage(channel="C1", text="x"))["ok"]


# ---------------------------------------------------------------------- client playing Slack


@pytest.mark.asyncio
async def test_command_is_signed(fake: FakeSlack, app: FakeApp, slack: SlackClient) -> None:
    app.reply = lambda _: web.json_response({"text": "got it"})
    ack = await slack.command("new acme", user="U_ANN", channel="C9")
    assert ack.status == 200 and ack.text == "got it"
    sent = app.requests[0]
    assert sent["command"] == "/identity" and sent["text"] == "new acme" and sent["user_id"] == "U_ANN"
    assert sent["trigger_id"] in fake._triggers and sent["response_url"].startswith("http://127.0.0.1")
    assert (await slack.command("x", signing_secret="wrong")).status == 401
    assert (await slack.command("x", timestamp=1_000_000)).status == 401
    assert (await slack.raw(b"token=x", {"Content-Type": "application/x-www-form-urlencoded"})).status == 401
    async with (
        aiohttp.ClientSession() as session,
        session.post(sent["response_url"], json={"text": "later", "response_type": "ephemeral"}) as r,
    ):
        assert r.status == 200
    assert (await fake.wait_for_response(lambda b: b["text"] == "later"))["response_type"] == "ephemeral"


@pytest.mark.asyncio
async def test_submit_state_initial_typed_and_block_id_change(
    fake: FakeSlack, api: AsyncWebClient, app: FakeApp, slack: SlackClient
) -> None:
    options = [Option(text="SMTP", value="smtp"), Option(text="API", value="api")]
    view = modal(
        text_input("name", initial="acme"),
        text_input("address#1"),
        InputBlock(
            block_id="kind",
            label="Kind",
            element=StaticSelectElement(action_id="pick", options=options, initial_option=options[0]),
        ),
        callback_id="identity_new",
    )
    view_id = (await api.views_open(trigger_id=fake.issue_trigger_id(), view=view))["view"]["id"]
    slack.type(view_id, "address", "a@example.com")
    slack.type(view_id, "kind", "api")
    with pytest.raises(ValueError):
        slack.type(view_id, "kind", "carrier-pigeon")
    with pytest.raises(LookupError):
        slack.type(view_id, "missing", "x")
    app.reply = lambda _: web.json_response({"response_action": "errors", "errors": {"address#1": "bad"}})
    ack = await slack.submit(view_id)
    assert ack.response_action == "errors" and ack.errors == {"address#1": "bad"}
    values = app.requests[-1]["view"]["state"]["values"]
    assert app.requests[-1]["type"] == "view_submission" and app.requests[-1]["view"]["callback_id"] == "identity_new"
    assert values["name"]["value"] == {"type": "plain_text_input", "value": "acme"}
    assert values["address#1"]["value"]["value"] == "a@example.com"
    assert values["kind"]["pick"]["selected_option"]["value"] == "api"
    assert values["kind"]["pick"]["selected_option"]["text"]["text"] == "API"
    assert fake.is_open(view_id) and fake.warnings == []

    slack.type(view_id, "name", "typed")
    new_view = modal(text_input("name", initial="acme"), text_input("address#2"), callback_id="identity_new")
    await api.views_update(view_id=view_id, view=new_view)
    app.reply = lambda _: web.Response(status=200)
    await slack.submit(view_id)
    values = app.requests[-1]["view"]["state"]["values"]
    assert values["name"]["value"]["value"] == "typed"  # same block_id/action_id: kept
    assert values["address#2"]["value"]["value"] is None  # new block_id: typed value gone
    assert "kind" not in values
    assert not fake.is_open(view_id)  # empty ack closes the modal


@pytest.mark.asyncio
async def test_submission_ack_update_push_and_bad_errors(
    fake: FakeSlack, api: AsyncWebClient, app: FakeApp, slack: SlackClient
) -> None:
    view_id = (await api.views_open(trigger_id=fake.issue_trigger_id(), view=modal(text_input("a"))))["view"]["id"]
    app.reply = lambda _: web.json_response({"response_action": "update", "view": modal(text_input("b"))})
    await slack.submit(view_id)
    assert fake.views[view_id]["blocks"][0]["block_id"] == "b"
    app.reply = lambda _: web.json_response({"response_action": "push", "view": modal(text_input("c"))})
    await slack.submit(view_id)
    top = fake.top_view(view_id)
    assert top != view_id and fake.views[top]["previous_view_id"] == view_id
    app.reply = lambda _: web.json_response({"response_action": "errors", "errors": {"nope": "x"}})
    await slack.submit(top)
    assert "not an input block_id" in fake.warnings[-1]
    app.reply = lambda _: web.json_response({"response_action": "clear"})
    await slack.submit(top)
    assert not fake.is_open(view_id) and not fake.is_open(top)


@pytest.mark.asyncio
async def test_clicks_and_dispatch(fake: FakeSlack, api: AsyncWebClient, app: FakeApp, slack: SlackClient) -> None:
    options = [Option(text="One", value="1"), Option(text="Two", value="2")]
    dispatching = InputBlock(
        block_id="pick",
        label="Pick",
        dispatch_action=True,
        element=StaticSelectElement(action_id="choose", options=options),
    )
    buttons = ActionsBlock(block_id="row", elements=[ButtonElement(text="Go", action_id="go", value="v1")])
    view_id = (
        await api.views_open(trigger_id=fake.issue_trigger_id(), view=modal(text_input("plain"), dispatching, buttons))
    )["view"]["id"]
    assert await slack.choose(view_id, "plain", "typed") is None
    assert app.requests == []
    await slack.choose(view_id, "pick", "2")
    action = app.requests[-1]["actions"][0]
    assert action["action_id"] == "choose" and action["selected_option"]["value"] == "2"
    assert app.requests[-1]["container"] == {"type": "view", "view_id": view_id}
    await slack.click_view(view_id, "go")
    sent = app.requests[-1]
    assert sent["actions"][0]["value"] == "v1" and sent["view"]["state"]["values"]["plain"]["value"]["value"] == "typed"
    # the click's trigger id targets this modal's stack
    await api.views_push(trigger_id=sent["trigger_id"], view=modal(text_input("pushed")))
    assert len(fake.stack(view_id)) == 2

    posted = await api.chat_postMessage(channel="C1", text="t", blocks=[buttons.to_dict()])
    app.reply = lambda _: web.Response(status=200)
    await slack.click_message(posted["channel"], posted["ts"], "go")
    sent = app.requests[-1]
    assert sent["container"]["message_ts"] == posted["ts"] and sent["message"]["text"] == "t"
    async with aiohttp.ClientSession() as session:
        await session.post(sent["response_url"], json={"replace_original": True, "text": "done"})
    await fake.wait_for_response(lambda b: b.get("text") == "done")
    assert fake.messages[("C1", posted["ts"])]["text"] == "done"
