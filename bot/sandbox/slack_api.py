"""A fake Slack Web API server (aiohttp) for end-to-end tests and demos.

The app under test talks to it through ``AsyncWebClient(token=..., base_url=fake.url)``. It answers like Slack
(HTTP 200 JSON ``{"ok": ...}``), validates Block Kit with ``slack_sdk.models`` and enforces the rules that bite in
production: single-use trigger ids that expire, view hashes, the 3-view stack, 50/100 block limits.

Socket Mode: with ``FakeSlack(app_token="xapp-...")``, ``apps.connections.open`` called with that app-level token
answers a single-use ``ws://`` URL served by the same aiohttp server. The fake speaks Slack's Socket Mode protocol
there (``hello`` on connect, envelopes out, envelope acks in, ``disconnect`` messages, ping/pong), so slack_sdk's own
socket-mode client (and Bolt's ``AsyncSocketModeHandler``) can connect; ``send_envelope`` delivers a payload to the
connected app and returns what it acknowledged.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self
from zoneinfo import ZoneInfo

from aiohttp import WSMsgType, web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

logger = logging.getLogger(__name__)

MESSAGE_BLOCK_LIMIT = 50
VIEW_BLOCK_LIMIT = 100
VIEW_STACK_LIMIT = 3
PRIVATE_METADATA_LIMIT = 3000

TEXT_INPUTS = frozenset({"plain_text_input", "email_text_input", "number_input", "url_text_input"})
SINGLE_OPTION = frozenset({"static_select", "radio_buttons", "external_select", "overflow"})
MULTI_OPTION = frozenset({"checkboxes", "multi_static_select", "multi_external_select"})
# element type -> (state key, initial value key)
ID_SELECTS: dict[str, tuple[str, str]] = {
    "conversations_select": ("selected_conversation", "initial_conversation"),
    "channels_select": ("selected_channel", "initial_channel"),
    "users_select": ("selected_user", "initial_user"),
    "multi_conversations_select": ("selected_conversations", "initial_conversations"),
    "multi_channels_select": ("selected_channels", "initial_channels"),
    "multi_users_select": ("selected_users", "initial_users"),
    "datepicker": ("selected_date", "initial_date"),
    "timepicker": ("selected_time", "initial_time"),
    "datetimepicker": ("selected_date_time", "initial_date_time"),
    "rich_text_input": ("rich_text_value", "initial_value"),
}
NON_INTERACTIVE = frozenset({"image", "plain_text", "mrkdwn"})
_MISSING: Any = object()
_MODEL_ERRORS = (SlackObjectFormationError, TypeError, ValueError, AttributeError, KeyError)


@dataclass
class Call:
    """One Web API call as the fake received and answered it."""

    method: str
    args: dict[str, Any]
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when the fake answered ``ok: true``."""
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        """The Slack error name, or None for a successful call."""
        return None if self.ok else self.response.get("error")


@dataclass
class SlackUser:
    """A workspace member known to ``users.info``."""

    id: str
    name: str
    is_admin: bool = False
    tz: str = "Europe/Berlin"
    real_name: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The user object as ``users.info`` returns it."""
        real_name = self.real_name or self.name
        offset = datetime.now(UTC).astimezone(ZoneInfo(self.tz)).utcoffset()
        return {
            "id": self.id,
            "name": self.name,
            "real_name": real_name,
            "is_admin": self.is_admin,
            "is_bot": False,
            "deleted": False,
            "tz": self.tz,
            "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
            "profile": {"real_name": real_name, "display_name": self.name},
        }


@dataclass
class _Trigger:
    issued_at: float
    user: str | None
    view_id: str | None
    used: bool = False


@dataclass
class _ResponseTarget:
    channel: str | None
    ts: str | None


@dataclass
class _InjectedError:
    error: str
    status: int
    retry_after: int | None
    times: int


@dataclass
class SocketConnection:
    """One Socket Mode websocket the app opened (kept after it closes, for inspection)."""

    id: str
    ws: web.WebSocketResponse = field(repr=False)
    draining: bool = False  # sent a ``disconnect`` message: no new envelopes go here
    closed: bool = False
    pings: list[bytes] = field(default_factory=list)  # payloads of the pings the app sent (the fake answers them)
    pongs: list[bytes] = field(default_factory=list)  # payloads of the app's pongs to the fake's pings

    @property
    def live(self) -> bool:
        """Open and not asked to reconnect: envelopes may be sent here."""
        return not self.closed and not self.draining and not self.ws.closed


@dataclass
class Envelope:
    """One Socket Mode envelope the fake sent, and the app's acknowledgement."""

    envelope_id: str
    type: str  # "slash_commands" | "interactive" | "events_api"
    payload: dict[str, Any]
    accepts_response_payload: bool
    connection_id: str
    acked: bool = False
    ack_payload: dict[str, Any] | None = None
    elapsed: float = 0.0


class ApiError(Exception):
    """Raised inside a method handler to answer ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []

    def response(self) -> dict[str, Any]:
        """The JSON body Slack would send."""
        body: dict[str, Any] = {"ok": False, "error": self.error}
        if self.messages:
            body["response_metadata"] = {"messages": self.messages}
        return body


def dm_channel(user_id: str) -> str:
    """The DM channel id the fake uses for a conversation between the bot and ``user_id``."""
    return "D" + user_id[1:]


def _random_id(length: int = 5) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _interactive_elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    """The interactive elements of a block (input element, actions elements, section accessory)."""
    btype = block.get("type")
    found: list[Any]
    if btype == "input":
        found = [block.get("element")]
    elif btype == "actions":
        found = list(block.get("elements") or [])
    elif btype == "section":
        found = [block.get("accessory")]
    else:
        found = []
    return [e for e in found if isinstance(e, dict) and e.get("type") not in NON_INTERACTIVE]


def _options(element: dict[str, Any]) -> list[dict[str, Any]]:
    """All options of a select/radio/checkbox element, including those in option groups."""
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    return options


def _same_option(a: dict[str, Any], b: dict[str, Any]) -> bool:
    text_a = (a.get("text") or {}).get("text")
    text_b = (b.get("text") or {}).get("text")
    return a.get("value") == b.get("value") and text_a == text_b


def _block_problems(blocks: list[Any], pointer: str) -> list[str]:
    """Reasons Slack would refuse these blocks (empty when fine)."""
    problems: list[str] = []
    seen_block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"[json-pointer:{pointer}/{i}]"
        if not isinstance(block, dict):
            problems.append(f"[ERROR] block must be an object {where}")
            continue
        try:
            parsed = Block.parse(block)
            if parsed is None:
                problems.append(f"[ERROR] unknown block type {block.get('type')!r} {where}")
                continue
            parsed.to_dict()
        except _MODEL_ERRORS as exc:  # malformed dicts raise more than SlackObjectFormationError
            problems.append(f"[ERROR] {exc} {where}")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen_block_ids:
                problems.append(f"[ERROR] duplicate block_id {block_id!r} {where}")
            seen_block_ids.add(block_id)
        seen_action_ids: set[str] = set()
        for element in _interactive_elements(block):
            action_id = element.get("action_id")
            if action_id is not None:
                if action_id in seen_action_ids:
                    problems.append(f"[ERROR] duplicate action_id {action_id!r} in block {where}")
                seen_action_ids.add(action_id)
            problems.extend(_initial_option_problems(element, where))
    return problems


def _initial_option_problems(element: dict[str, Any], where: str) -> list[str]:
    options = _options(element)
    if not options:
        return []
    initial: list[dict[str, Any]] = []
    if isinstance(element.get("initial_option"), dict):
        initial.append(element["initial_option"])
    initial.extend(o for o in element.get("initial_options") or [] if isinstance(o, dict))
    return [
        f"[ERROR] initial option {o.get('value')!r} is not one of the element's options {where}"
        for o in initial
        if not any(_same_option(o, candidate) for candidate in options)
    ]


def _element_state(element: dict[str, Any], typed: Any = _MISSING) -> dict[str, Any]:
    """An element's entry in ``view.state.values`` as Slack builds it."""
    etype = element.get("type", "")
    if etype in TEXT_INPUTS:
        return {"type": etype, "value": element.get("initial_value") if typed is _MISSING else typed}
    if etype in SINGLE_OPTION:
        option = element.get("initial_option") if typed is _MISSING else typed
        return {"type": etype, "selected_option": copy.deepcopy(option)}
    if etype in MULTI_OPTION:
        options = element.get("initial_options") or [] if typed is _MISSING else typed
        return {"type": etype, "selected_options": copy.deepcopy(options)}
    if etype in ID_SELECTS:
        state_key, initial_key = ID_SELECTS[etype]
        return {
            "type": etype,
            state_key: copy.deepcopy(element.get(initial_key) if typed is _MISSING else typed),
        }
    return {"type": etype, "value": None if typed is _MISSING else typed}


def _resolve_typed(element: dict[str, Any], value: Any) -> Any:
    """Turn what a test says the user entered into what Slack stores (full option dicts for selects)."""
    etype = element.get("type", "")

    def option_for(v: Any) -> dict[str, Any]:
        if isinstance(v, dict):
            return copy.deepcopy(v)
        options = _options(element)
        if not options and etype in {"external_select", "multi_external_select"}:
            return {"text": {"type": "plain_text", "text": str(v)}, "value": str(v)}
        for option in options:
            if option.get("value") == v:
                return copy.deepcopy(option)
        values = [o.get("value") for o in options]
        raise ValueError(f"{v!r} is not an option of {element.get('action_id')!r}; options: {values}")

    if etype in SINGLE_OPTION:
        return None if value is None else option_for(value)
    if etype in MULTI_OPTION:
        if isinstance(value, (str, dict)):
            value = [value]
        return [option_for(v) for v in value or []]
    if etype in TEXT_INPUTS and value is not None:
        return str(value)
    return value


class FakeSlack:
    """Fake Slack Web API (plus response_url endpoints) served by aiohttp on a loopback port."""

    def __init__(
        self,
        token: str = "xoxb-fake",
        team_id: str = "T0TEST",
        bot_user_id: str = "UBOT",
        trigger_ttl: float = 3.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        bot_id: str = "B0BOT",
        app_id: str = "A0TEST",
        app_token: str | None = None,
    ) -> None:
        self.token = token
        # The app-level token apps.connections.open accepts (None: Socket Mode is off and every app token is refused).
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.trigger_ttl = trigger_ttl
        self.clock = clock
        self.calls: list[Call] = []
        self.warnings: list[str] = []
        # Channels the bot is not a member of and cannot post to (private channels): not_in_channel.
        self.unreachable_channels: set[str] = set()
        self.views: dict[str, dict[str, Any]] = {}
        self.home: dict[str, str] = {}  # user id -> view id of the published Home tab
        self.closed_views: set[str] = set()
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.users: dict[str, SlackUser] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.on_call: Callable[[Call], None] | None = None
        self._typed: dict[tuple[str, str, str], Any] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._stacks: dict[str, list[str]] = {}  # root view id -> open view ids, bottom first
        self._stack_user: dict[str, str | None] = {}
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._injected: dict[str, list[_InjectedError]] = {}
        self._counter: Iterator[int] = itertools.count(1)
        self._ts_counter: Iterator[int] = itertools.count(1)
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._base: str | None = None
        # Socket Mode
        self.sockets: list[SocketConnection] = []  # every connection ever opened, oldest first
        self.envelopes: list[Envelope] = []
        self._socket_tickets: set[str] = set()
        self._pending_acks: dict[str, tuple[Envelope, asyncio.Future[dict[str, Any] | None]]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port`` (port 0 picks a free one)."""
        self._condition()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{rid}", self._handle_response)
        app.router.add_get("/socket/{ticket}", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets, "fake Slack failed to bind"
        bound_port = server.sockets[0].getsockname()[1]
        self._base = f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving (closes the Socket Mode connections first: aiohttp would wait for their handlers)."""
        for conn in self.sockets:
            if not conn.ws.closed:
                await conn.ws.close(code=1001, message=b"server shutting down")
        for _, future in self._pending_acks.values():
            if not future.done():
                future.set_result(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Web API base URL for ``AsyncWebClient(base_url=...)`` (with trailing slash)."""
        return f"{self._require_base()}/api/"

    def _require_base(self) -> str:
        if self._base is None:
            raise RuntimeError("FakeSlack is not started")
        return self._base

    # ------------------------------------------------------------------ test set-up

    def add_user(
        self,
        user_id: str,
        name: str | None = None,
        is_admin: bool = False,
        tz: str = "Europe/Berlin",
        real_name: str | None = None,
    ) -> SlackUser:
        """Make ``user_id`` known to ``users.info`` (name defaults to the lower-cased id)."""
        user = SlackUser(id=user_id, name=name or user_id.lower(), is_admin=is_admin, tz=tz, real_name=real_name)
        self.users[user_id] = user
        return user

    def add_usergroup(self, group_id: str, user_ids: list[str]) -> None:
        """Make a user group known to ``usergroups.users.list``."""
        self.usergroups[group_id] = list(user_ids)

    def issue_trigger_id(self, *, user: str | None = None, view_id: str | None = None) -> str:
        """A new single-use trigger id; ``view_id`` is the modal it came from (``views.push`` targets its stack)."""
        n = next(self._counter)
        trigger_id = f"{n}.{1700000000 + n}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = _Trigger(issued_at=self.clock(), user=user, view_id=view_id)
        return trigger_id

    def response_url(self, *, channel: str | None = None, ts: str | None = None) -> str:
        """A fresh response_url on this server; give the message it belongs to so replace/delete_original work."""
        rid = secrets.token_hex(8)
        self._response_targets[rid] = _ResponseTarget(channel=channel, ts=ts)
        return f"{self._require_base()}/response/{rid}"

    def inject_error(
        self,
        method: str,
        error: str = "ratelimited",
        *,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``error`` (e.g. status=429, retry_after=1)."""
        self._injected.setdefault(method, []).append(_InjectedError(error, status, retry_after, times))

    # ------------------------------------------------------------------ inspection

    def mark(self) -> int:
        """The current number of recorded calls (use as ``after=`` in wait_for)."""
        return len(self.calls)

    def calls_to(self, method: str) -> list[Call]:
        """All recorded calls of one method."""
        return [c for c in self.calls if c.method == method]

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Messages of a channel in post order (top level and replies), current content."""
        if channel[:1] in ("U", "W"):
            channel = dm_channel(channel)
        return [m for (ch, _), m in self.messages.items() if ch == channel]

    def stack(self, view_id: str) -> list[str]:
        """The open view stack (bottom first) containing ``view_id``; empty when closed or unknown."""
        for views in self._stacks.values():
            if view_id in views:
                return list(views)
        return []

    def is_open(self, view_id: str) -> bool:
        """True while the modal (or Home tab) is shown."""
        if view_id in self.home.values():
            return True
        return bool(self.stack(view_id))

    def top_view(self, view_id: str) -> str | None:
        """Id of the view on top of the stack containing ``view_id``."""
        views = self.stack(view_id)
        return views[-1] if views else None

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = 10.0,
    ) -> Call:
        """The first call of ``method`` at index >= ``after`` matching ``predicate``; waits for it if needed."""

        def find() -> Call | None:
            for call in self.calls[after:]:
                if call.method == method and (predicate is None or predicate(call)):
                    return call
            return None

        found = await self._wait(find, timeout)
        if found is None:
            seen = "\n".join(
                f"  #{i} {c.method} -> {'ok' if c.ok else c.error}" for i, c in enumerate(self.calls) if i >= after
            )
            raise AssertionError(
                f"no matching {method} call within {timeout}s; calls since #{after}:\n{seen or '  none'}"
            )
        return found

    async def wait_for_response(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The first response_url post at index >= ``after`` matching ``predicate``; waits for it if needed."""

        def find() -> dict[str, Any] | None:
            for body in self.responses[after:]:
                if predicate is None or predicate(body):
                    return body
            return None

        found = await self._wait(find, timeout)
        if found is None:
            seen = "\n".join(f"  #{i} {json.dumps(b)[:200]}" for i, b in enumerate(self.responses) if i >= after)
            raise AssertionError(f"no matching response_url post within {timeout}s; seen:\n{seen or '  none'}")
        return found

    async def _wait(self, find: Callable[[], Any], timeout: float) -> Any:
        found = find()
        if found is not None:
            return found
        cond = self._condition()
        try:
            async with cond:
                await asyncio.wait_for(cond.wait_for(lambda: find() is not None), timeout)
        except TimeoutError:
            return None
        return find()

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def _notify(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    # ------------------------------------------------------------------ Socket Mode

    def live_sockets(self) -> list[SocketConnection]:
        """Connections envelopes may be sent over (open, not told to reconnect), oldest first."""
        return [c for c in self.sockets if c.live]

    async def wait_for_socket(self, *, after: int = 0, timeout: float = 10.0) -> SocketConnection:
        """The first connection at index >= ``after`` of ``sockets`` that is live (has had its ``hello``)."""

        def find() -> SocketConnection | None:
            return next((c for c in self.sockets[after:] if c.live), None)

        found = await self._wait(find, timeout)
        if found is None:
            raise AssertionError(
                f"no Socket Mode connection (#{after} or later) within {timeout}s; connections: {self.sockets}"
            )
        return found

    async def wait_socket_closed(self, conn: SocketConnection, *, timeout: float = 10.0) -> None:
        """Wait until ``conn`` is closed (by either side)."""
        if await self._wait(lambda: conn.closed or None, timeout) is None:
            raise AssertionError(f"Socket Mode connection {conn.id} still open after {timeout}s")

    async def send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        timeout: float = 10.0,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> Envelope:
        """Send ``payload`` to the connected app as a ``kind`` envelope and wait (at most ``timeout``) for its ack.

        Waits for a live connection first (the newest one gets it). Returns the Envelope; ``acked`` is False when no
        ack arrived in time (Bolt sends none when the app did not answer 200, e.g. no listener matched).
        """
        deadline = time.monotonic() + timeout
        while True:
            conn = self.live_sockets()[-1] if self.live_sockets() else None
            if conn is None:
                conn = await self.wait_for_socket(timeout=max(0.0, deadline - time.monotonic()))
            envelope = Envelope(
                envelope_id=str(uuid.uuid4()),
                type=kind,
                payload=payload,
                accepts_response_payload=accepts_response_payload,
                connection_id=conn.id,
            )
            message: dict[str, Any] = {
                "envelope_id": envelope.envelope_id,
                "payload": payload,
                "type": kind,
                "accepts_response_payload": accepts_response_payload,
            }
            if retry_attempt is not None:
                message["retry_attempt"] = retry_attempt
                message["retry_reason"] = retry_reason or ""
            future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
            self._pending_acks[envelope.envelope_id] = (envelope, future)
            started = time.monotonic()
            try:
                await conn.ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):  # closed under us: Slack would use another connection
                self._pending_acks.pop(envelope.envelope_id, None)
                conn.closed = True
                if time.monotonic() >= deadline:
                    raise
                continue
            self.envelopes.append(envelope)
            break
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pass
        finally:
            self._pending_acks.pop(envelope.envelope_id, None)
        envelope.elapsed = time.monotonic() - started
        return envelope

    async def socket_disconnect(self, reason: str = "refresh_requested") -> list[SocketConnection]:
        """Send Slack's ``disconnect`` message on every live connection (the app should open a new one and close
        these); they get no new envelopes. ``reason``: "warning", "refresh_requested" or "link_disabled"."""
        told = self.live_sockets()
        for conn in told:
            conn.draining = True
            message = {
                "type": "disconnect",
                "reason": reason,
                "debug_info": {"host": "fake-applink"},
            }
            await conn.ws.send_str(json.dumps(message))
        return told

    async def close_sockets(self, code: int = 1001) -> list[SocketConnection]:
        """Close every open connection from the server side (as when Slack restarts)."""
        closing = [c for c in self.sockets if not c.ws.closed]
        for conn in closing:
            conn.draining = True
            await conn.ws.close(code=code, message=b"fake closed the connection")
        return closing

    async def ping_socket(self, data: bytes = b"fake-ping", *, timeout: float = 10.0) -> SocketConnection:
        """Ping the newest live connection and wait for the app's pong carrying ``data``."""
        conn = await self.wait_for_socket(after=max(0, len(self.sockets) - 1), timeout=timeout)
        await conn.ws.ping(data)
        if await self._wait(lambda: data in conn.pongs or None, timeout) is None:
            raise AssertionError(f"no pong for {data!r} on {conn.id} within {timeout}s")
        return conn

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.match_info["ticket"]
        if ticket not in self._socket_tickets:  # each apps.connections.open URL is good for one connection
            return web.Response(status=401, text="invalid_ticket")
        self._socket_tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=False)  # pings are answered below, so they can be recorded
        await ws.prepare(request)
        conn = SocketConnection(id=f"S{len(self.sockets) + 1}-{secrets.token_hex(3)}", ws=ws)
        hello = {
            "type": "hello",
            "num_connections": len([c for c in self.sockets if not c.closed]) + 1,
            "debug_info": {"host": "fake-applink", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }
        await ws.send_str(json.dumps(hello))
        self.sockets.append(conn)
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    conn.pings.append(msg.data)
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    conn.pongs.append(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._on_socket_text(conn, msg.data)
                else:
                    self.warnings.append(f"socket {conn.id}: unexpected {msg.type.name} message")
                await self._notify()
        finally:
            conn.closed = True
            await self._notify()
        return ws

    def _on_socket_text(self, conn: SocketConnection, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            self.warnings.append(f"socket {conn.id}: not JSON: {text[:200]!r}")
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        pending = self._pending_acks.get(envelope_id) if isinstance(envelope_id, str) else None
        if pending is None:
            self.warnings.append(
                f"socket {conn.id}: ack for an unknown, late or already acked envelope: {text[:200]!r}"
            )
            return
        envelope, future = pending
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            self.warnings.append(f"socket {conn.id}: ack payload is not an object: {text[:200]!r}")
            payload = None
        if payload and not envelope.accepts_response_payload:
            self.warnings.append(
                f"socket {conn.id}: ack of a {envelope.type} envelope carries a payload Slack ignores: {payload}"
            )
        envelope.acked = True
        envelope.ack_payload = payload
        del self._pending_acks[envelope.envelope_id]
        if not future.done():
            future.set_result(payload)

    # ------------------------------------------------------------------ view state (used by SlackClient)

    def find_element(
        self, view_id: str, block_id: str, action_id: str | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Resolve ``block_id`` (exact, or the part before '#') and ``action_id`` in the current view."""
        view = self._view_or_raise(view_id)
        blocks = [b for b in view.get("blocks", []) if _interactive_elements(b)]
        matches = [b for b in blocks if b.get("block_id") == block_id]
        if not matches:
            matches = [b for b in blocks if str(b.get("block_id", "")).split("#", 1)[0] == block_id]
        ids = [b.get("block_id") for b in blocks]
        if not matches:
            raise LookupError(f"view {view_id} has no input/interactive block {block_id!r}; blocks: {ids}")
        if len(matches) > 1:
            raise LookupError(
                f"block id {block_id!r} is ambiguous in view {view_id}: {[b['block_id'] for b in matches]}"
            )
        block = matches[0]
        elements = _interactive_elements(block)
        if action_id is not None:
            elements = [e for e in elements if e.get("action_id") == action_id]
        if len(elements) != 1:
            raise LookupError(f"block {block.get('block_id')!r} has no single element with action_id {action_id!r}")
        return block, elements[0]

    def set_input(self, view_id: str, block_id: str, value: Any, action_id: str | None = None) -> tuple[str, str]:
        """Record what the user entered; returns the resolved (block_id, action_id)."""
        block, element = self.find_element(view_id, block_id, action_id)
        resolved = _resolve_typed(element, value)
        key = (view_id, block["block_id"], element["action_id"])
        self._typed[key] = resolved
        self._refresh_state(view_id)
        return key[1], key[2]

    def typed_value(self, view_id: str, block_id: str, action_id: str) -> Any:
        """What the user entered at exactly (view, block_id, action_id), or None."""
        return self._typed.get((view_id, block_id, action_id))

    def view_state(self, view_id: str) -> dict[str, Any]:
        """``view.state`` as Slack sends it in interaction payloads."""
        view = self._view_or_raise(view_id)
        values: dict[str, dict[str, Any]] = {}
        for block in view.get("blocks", []):
            block_id = block.get("block_id")
            for element in _interactive_elements(block):
                key = (view_id, block_id, element.get("action_id"))
                if block.get("type") == "input":
                    values.setdefault(block_id, {})[element["action_id"]] = _element_state(
                        element, self._typed.get(key, _MISSING)
                    )
                elif key in self._typed:
                    values.setdefault(block_id, {})[element["action_id"]] = _element_state(element, self._typed[key])
        return {"values": values}

    def element_state(self, view_id: str, block_id: str, action_id: str) -> dict[str, Any]:
        """The state entry of one element (typed or initial)."""
        _, element = self.find_element(view_id, block_id, action_id)
        return _element_state(element, self._typed.get((view_id, block_id, action_id), _MISSING))

    def _refresh_state(self, view_id: str) -> None:
        view = self.views.get(view_id)
        if view is not None:
            view["state"] = self.view_state(view_id)

    def _purge_typed(self, view_id: str) -> None:
        """Forget entries whose block_id/action_id no longer exist (Slack keeps state only for unchanged ids)."""
        view = self.views[view_id]
        present = {
            (view_id, b.get("block_id"), e.get("action_id"))
            for b in view.get("blocks", [])
            for e in _interactive_elements(b)
        }
        for key in [k for k in self._typed if k[0] == view_id and k not in present]:
            del self._typed[key]

    def _view_or_raise(self, view_id: str) -> dict[str, Any]:
        try:
            return self.views[view_id]
        except KeyError:
            raise LookupError(f"unknown view {view_id!r}; known: {list(self.views)}") from None

    # ------------------------------------------------------------------ view stack changes (used by SlackClient)

    def close_view(self, view_id: str, *, clear: bool = False) -> None:
        """Close ``view_id`` and the views above it (whole stack when ``clear`` or it is the root)."""
        for root, views in list(self._stacks.items()):
            if view_id not in views:
                continue
            cut = 0 if clear else views.index(view_id)
            self.closed_views.update(views[cut:])
            del views[cut:]
            if not views:
                del self._stacks[root]
                self._stack_user.pop(root, None)
            return

    def apply_submission_ack(self, view_id: str, status: int, body: Any) -> None:
        """Do what Slack does with the app's answer to a view_submission."""
        if status != 200:
            self.warnings.append(f"view_submission: app answered HTTP {status}; Slack shows an error")
            return
        if not isinstance(body, dict) or not body.get("response_action"):
            self.close_view(view_id)
            return
        action = body["response_action"]
        if action == "errors":
            errors = body.get("errors")
            inputs = {b.get("block_id") for b in self.views[view_id].get("blocks", []) if b.get("type") == "input"}
            if not isinstance(errors, dict) or not errors:
                self.warnings.append("view_submission: response_action=errors with empty errors")
                return
            for block_id in errors:
                if block_id not in inputs:
                    self.warnings.append(
                        f"view_submission: errors key {block_id!r} is not an input block_id of view {view_id}"
                    )
        elif action == "clear":
            self.close_view(view_id, clear=True)
        elif action in ("update", "push"):
            try:
                view = self._validate_view(body.get("view"), {"modal"}, "/view")
                if action == "update":
                    self._replace_view(view_id, view)
                else:
                    self._push_view(view_id, view)
            except ApiError as exc:
                self.warnings.append(f"view_submission: response_action={action} refused: {exc.error} {exc.messages}")
        else:
            self.warnings.append(f"view_submission: unknown response_action {action!r}")

    # ------------------------------------------------------------------ HTTP handlers

    async def _handle_response(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        target = self._response_targets.get(rid)
        if target is None:
            return web.Response(status=404, text="no_such_response_url")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if isinstance(body, dict):
            self._apply_response(target, body)
            self.responses.append(body)
        await self._notify()
        return web.Response(text="ok")

    def _apply_response(self, target: _ResponseTarget, body: dict[str, Any]) -> None:
        key = (target.channel or "", target.ts or "")
        if body.get("text") is None and not body.get("blocks") and not body.get("delete_original"):
            self.warnings.append("response_url: message without text")
        elif body.get("blocks") and not body.get("text"):
            self.warnings.append("response_url: blocks without top-level text")
        if key not in self.messages:
            return
        if body.get("delete_original"):
            del self.messages[key]
        elif body.get("replace_original"):
            message = self.messages[key]
            message["text"] = body.get("text", "")
            message["blocks"] = body.get("blocks") or []

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        status, headers = 200, {}
        try:
            args.update(await self._read_body(request))
            self._authenticate(method, args, request)
            injected = self._take_injected(method)
            if injected is not None:
                status = injected.status
                if injected.retry_after is not None:
                    headers["Retry-After"] = str(injected.retry_after)
                raise ApiError(injected.error)
            response = {"ok": True, **self._handlers()[method](args)}
        except ApiError as exc:
            response = exc.response()
        call = Call(method=method, args=args, response=response)
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)
        await self._notify()
        return web.json_response(response, status=status, headers=headers)

    def _take_injected(self, method: str) -> _InjectedError | None:
        queue = self._injected.get(method)
        if not queue:
            return None
        injected = queue[0]
        injected.times -= 1
        if injected.times <= 0:
            queue.pop(0)
        return injected

    @staticmethod
    async def _read_body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        if "json" in request.content_type:
            try:
                data = await request.json()
            except ValueError:
                raise ApiError("invalid_json") from None
            if not isinstance(data, dict):
                raise ApiError("invalid_json")
            return data
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _authenticate(self, method: str, args: dict[str, Any], request: web.Request) -> None:
        """Check method and token like Slack; parse JSON-encoded form fields."""
        if method not in self._handlers():
            raise ApiError("unknown_method")
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        body_token = args.pop("token", None)
        token = token or body_token
        if not token:
            raise ApiError("not_authed")
        if method == "apps.connections.open":  # the one method that takes an app-level token, and only that
            if not token.startswith("xapp-"):
                raise ApiError("not_allowed_token_type")
            if self.app_token is None or token != self.app_token:
                raise ApiError("invalid_auth")
            return
        if token.startswith("xapp-"):
            raise ApiError("not_allowed_token_type")
        if token != self.token:
            raise ApiError("invalid_auth")
        for key in ("blocks", "view", "attachments"):
            if isinstance(args.get(key), str):
                try:
                    args[key] = json.loads(args[key])
                except ValueError:
                    pass  # handlers report the malformed field

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
        }

    # ------------------------------------------------------------------ Web API methods

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": "identity-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(12)
        self._socket_tickets.add(ticket)
        ws_base = "ws://" + self._require_base().split("://", 1)[1]
        return {"url": f"{ws_base}/socket/{ticket}"}

    def _use_trigger(self, trigger_id: Any) -> _Trigger:
        trigger = self._triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger.used or self.clock() - trigger.issued_at > self.trigger_ttl:
            raise ApiError("expired_trigger_id")
        return trigger

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = self._use_trigger(args.get("trigger_id"))
        view = self._validate_view(args.get("view"), {"modal"}, "/view")
        self._check_external_id(view)
        trigger.used = True
        view_id = self._new_view_id()
        stored = self._store_view(view_id, view, root=view_id, previous=None)
        self._stacks[view_id] = [view_id]
        self._stack_user[view_id] = trigger.user
        return {"view": copy.deepcopy(stored)}

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = self._use_trigger(args.get("trigger_id"))
        view = self._validate_view(args.get("view"), {"modal"}, "/view")
        self._check_external_id(view)
        below = self._stack_for_trigger(trigger)
        if below is None:
            raise ApiError(
                "invalid_arguments",
                ["[ERROR] no modal is open for this trigger_id [json-pointer:/trigger_id]"],
            )
        trigger.used = True
        stored = self._push_view(below, view)
        return {"view": copy.deepcopy(stored)}

    def _stack_for_trigger(self, trigger: _Trigger) -> str | None:
        if trigger.view_id is not None and self.stack(trigger.view_id):
            return self.stack(trigger.view_id)[-1]
        for root in reversed(list(self._stacks)):
            if trigger.user is None or self._stack_user.get(root) in (None, trigger.user):
                return self._stacks[root][-1]
        return None

    def _push_view(self, below: str, view: dict[str, Any]) -> dict[str, Any]:
        views = next((v for v in self._stacks.values() if below in v), None)
        if views is None:
            raise ApiError("not_found")
        if len(views) >= VIEW_STACK_LIMIT:
            raise ApiError("push_limit_reached")
        view_id = self._new_view_id()
        stored = self._store_view(view_id, view, root=views[0], previous=views[-1])
        views.append(view_id)
        return stored

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = args.get("view_id")
        external_id = args.get("external_id")
        if not view_id and not external_id:
            raise ApiError("invalid_arguments", ["[ERROR] view_id or external_id is required"])
        if not view_id:
            view_id = next((i for i, v in self.views.items() if v.get("external_id") == external_id), None)
        if view_id not in self.views or view_id in self.closed_views:
            raise ApiError("not_found")
        current = self.views[view_id]
        if args.get("hash") and args["hash"] != current["hash"]:
            raise ApiError("hash_conflict")
        view = self._validate_view(args.get("view"), {current["type"]}, "/view")
        stored = self._replace_view(view_id, view)
        return {"view": copy.deepcopy(stored)}

    def _replace_view(self, view_id: str, view: dict[str, Any]) -> dict[str, Any]:
        current = self.views[view_id]
        stored = self._store_view(view_id, view, root=current["root_view_id"], previous=current["previous_view_id"])
        self._purge_typed(view_id)
        self._refresh_state(view_id)
        return stored

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user_id = args.get("user_id")
        if not user_id:
            raise ApiError("invalid_arguments", ["[ERROR] user_id is required [json-pointer:/user_id]"])
        view = self._validate_view(args.get("view"), {"home"}, "/view")
        view_id = self.home.get(user_id)
        if view_id is not None and args.get("hash") and args["hash"] != self.views[view_id]["hash"]:
            raise ApiError("hash_conflict")
        if view_id is None:
            view_id = self._new_view_id()
            stored = self._store_view(view_id, view, root=view_id, previous=None)
            self.home[user_id] = view_id
        else:
            stored = self._replace_view(view_id, view)
        return {"view": copy.deepcopy(stored)}

    def _new_view_id(self) -> str:
        return f"V{next(self._counter):08d}"

    def _check_external_id(self, view: dict[str, Any]) -> None:
        ext = view.get("external_id")
        if ext and any(v.get("external_id") == ext for v in self.views.values()):
            raise ApiError("duplicate_external_id")

    def _store_view(self, view_id: str, view: dict[str, Any], *, root: str, previous: str | None) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata") or "",
            "callback_id": view.get("callback_id") or "",
            "state": {"values": {}},
            "hash": f"{1700000000 + next(self._counter)}.{secrets.token_hex(4)}",
            "title": view.get("title"),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": view.get("close"),
            "submit": view.get("submit"),
            "previous_view_id": previous,
            "root_view_id": root,
            "app_id": self.app_id,
            "external_id": view.get("external_id") or "",
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.views[view_id] = stored
        self._refresh_state(view_id)
        return stored

    def _validate_view(self, raw: Any, kinds: set[str], pointer: str) -> dict[str, Any]:
        """A normalised copy of a valid view, or ApiError(invalid_arguments) listing what is wrong."""
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise ApiError(
                    "invalid_arguments", [f"[ERROR] view is not valid JSON [json-pointer:{pointer}]"]
                ) from None
        if not isinstance(raw, dict):
            raise ApiError("invalid_arguments", [f"[ERROR] missing or non-object view [json-pointer:{pointer}]"])
        view = copy.deepcopy(raw)
        problems: list[str] = []
        if view.get("type") not in kinds:
            problems.append(f"[ERROR] view type must be one of {sorted(kinds)} [json-pointer:{pointer}/type]")
        blocks = view.get("blocks")
        if not isinstance(blocks, list):
            problems.append(f"[ERROR] blocks must be a list [json-pointer:{pointer}/blocks]")
            blocks = []
        if len(blocks) > VIEW_BLOCK_LIMIT:
            problems.append(f"[ERROR] more than {VIEW_BLOCK_LIMIT} blocks [json-pointer:{pointer}/blocks]")
        problems.extend(_block_problems(blocks, f"{pointer}/blocks"))
        if view.get("type") == "modal":
            if not view.get("title"):
                problems.append(f"[ERROR] a modal needs a title [json-pointer:{pointer}/title]")
            if any(isinstance(b, dict) and b.get("type") == "input" for b in blocks) and not view.get("submit"):
                problems.append(f"[ERROR] a modal with input blocks needs submit [json-pointer:{pointer}/submit]")
        metadata = view.get("private_metadata")
        if metadata is not None and not isinstance(metadata, str):
            problems.append(f"[ERROR] private_metadata must be a string [json-pointer:{pointer}/private_metadata]")
        elif metadata is not None and len(metadata) > PRIVATE_METADATA_LIMIT:
            problems.append(
                f"[ERROR] private_metadata longer than {PRIVATE_METADATA_LIMIT} "
                f"[json-pointer:{pointer}/private_metadata]"
            )
        if not problems:
            try:
                View(**view).to_dict()
            except _MODEL_ERRORS as exc:
                problems.append(f"[ERROR] {exc} [json-pointer:{pointer}]")
        if problems:
            raise ApiError("invalid_arguments", problems)
        self._fill_ids(blocks)
        view["blocks"] = blocks
        return view

    @staticmethod
    def _fill_ids(blocks: list[dict[str, Any]]) -> None:
        """Slack assigns random block_ids/action_ids where the app gave none."""
        for block in blocks:
            block.setdefault("block_id", _random_id())
            for element in _interactive_elements(block):
                element.setdefault("action_id", _random_id())

    def _message_content(self, method: str, args: dict[str, Any], *, required: bool = True) -> tuple[Any, Any]:
        """Checked (text, blocks) of a message call; blocks None when not given."""
        text = args.get("text")
        blocks = args.get("blocks")
        if blocks is not None:
            if not isinstance(blocks, list):
                raise ApiError("invalid_blocks_format")
            if len(blocks) > MESSAGE_BLOCK_LIMIT:
                raise ApiError(
                    "invalid_blocks",
                    [f"[ERROR] more than {MESSAGE_BLOCK_LIMIT} blocks [json-pointer:/blocks]"],
                )
            problems = _block_problems(blocks, "/blocks")
            if problems:
                raise ApiError("invalid_blocks", problems)
            blocks = copy.deepcopy(blocks)
            self._fill_ids(blocks)
        if required and not text and not blocks and not args.get("attachments"):
            raise ApiError("no_text")
        if blocks and not (isinstance(text, str) and text.strip()):
            self.warnings.append(f"{method}: blocks without top-level text")
        return text, blocks

    def _new_ts(self) -> str:
        return f"{1700000000 + next(self._ts_counter)}.000100"

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            raise ApiError("channel_not_found")
        if channel[:1] in ("U", "W"):
            channel = dm_channel(channel)
        if channel in self.unreachable_channels:
            raise ApiError("not_in_channel")
        text, blocks = self._message_content("chat.postMessage", args)
        ts = self._new_ts()
        message: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "ts": ts,
            "text": text or "",
            "blocks": blocks or [],
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "team": self.team_id,
        }
        thread_ts = args.get("thread_ts")
        if thread_ts:
            message["thread_ts"] = thread_ts
            if (channel, thread_ts) not in self.messages:
                self.warnings.append(f"chat.postMessage: thread_ts {thread_ts} is not a message in {channel}")
        self.messages[(channel, ts)] = message
        public = {k: v for k, v in message.items() if k != "channel"}
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(public)}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel or channel[:1] in ("U", "W"):
            raise ApiError("channel_not_found")
        key = (channel, str(args.get("ts")))
        if key not in self.messages:
            raise ApiError("message_not_found")
        text, blocks = self._message_content("chat.update", args)
        message = self.messages[key]
        if text is not None:
            message["text"] = text
        if blocks is not None:
            message["blocks"] = blocks
        message["edited"] = {"user": self.bot_user_id, "ts": self._new_ts()}
        public = {k: v for k, v in message.items() if k != "channel"}
        return {"channel": channel, "ts": key[1], "text": message["text"], "message": copy.deepcopy(public)}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel")
        if not channel:
            raise ApiError("channel_not_found")
        user = args.get("user")
        if not user:
            raise ApiError("user_not_in_channel")
        text, blocks = self._message_content("chat.postEphemeral", args)
        ts = self._new_ts()
        self.ephemerals.append(
            {"channel": channel, "user": user, "text": text or "", "blocks": blocks or [], "message_ts": ts}
        )
        return {"message_ts": ts}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = args.get("users")
        if isinstance(users, str):
            users = [u for u in users.split(",") if u]
        if args.get("channel"):
            return {"channel": {"id": args["channel"]}}
        if not users:
            raise ApiError("users_list_not_supplied")
        if len(users) == 1:
            return {"channel": {"id": dm_channel(users[0])}}
        return {"channel": {"id": "G" + "".join(u[1:] for u in sorted(users))[:10]}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise ApiError("user_not_found")
        return {"user": user.to_api()}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self.usergroups.get(str(args.get("usergroup")))
        if group is None:
            raise ApiError("no_such_subteam")
        return {"users": list(group)}


__all__ = ["ApiError", "Call", "Envelope", "FakeSlack", "SlackUser", "SocketConnection", "dm_channel"]
