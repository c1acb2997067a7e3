"""Plays Slack towards the running app: slash commands, interactive payloads and events.

Two transports, same methods: HTTP (signed requests to ``{app_url}/slack/events``, the default) and Socket Mode
(``SlackClient.socket_mode(fake)``: the same payloads go as envelopes over the websocket the app opened to the
FakeSlack, and the ack comes from the app's envelope acknowledgement).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp

from bot.sandbox.slack_api import (
    FakeSlack,
    _element_state,
    _interactive_elements,
    _resolve_typed,
    dm_channel,
)

VERIFICATION_TOKEN = "fake-verification-token"
TEAM_DOMAIN = "fake-workspace"
DEFAULT_USER = "U_LEAD"
# Interactive payload types whose Socket Mode envelope says ``accepts_response_payload: true`` (their ack can carry
# something Slack uses); for the others (block_actions, view_closed, shortcuts) Slack ignores an ack payload.
RESPONSE_PAYLOAD_TYPES = frozenset({"view_submission", "block_suggestion"})


@dataclass
class AckResponse:
    """The app's answer to a request Slack sent: the HTTP response, or (Socket Mode) the envelope ack as status 200
    with the ack's payload as body; 504 with body None when the app sent no ack in time."""

    status: int
    body: dict[str, Any] | str | None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """True for HTTP 200."""
        return self.status == 200

    @property
    def response_action(self) -> str | None:
        """``response_action`` of a view_submission ack, if any."""
        return self.body.get("response_action") if isinstance(self.body, dict) else None

    @property
    def errors(self) -> dict[str, str]:
        """Per-block validation errors when ``response_action == "errors"``, else empty."""
        if isinstance(self.body, dict) and self.body.get("response_action") == "errors":
            return dict(self.body.get("errors") or {})
        return {}

    @property
    def text(self) -> str | None:
        """The ``text`` of a JSON ack (what the user sees for a slash command), or the plain body."""
        if isinstance(self.body, dict):
            return self.body.get("text")
        return self.body


def sign(signing_secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def _find_action(
    blocks: list[dict[str, Any]], action_id: str, *, block_id: str | None, value: str | None, where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (block, element) with ``action_id``; ``block_id`` (exact or prefix before '#') or value disambiguate."""
    found = [(b, e) for b in blocks for e in _interactive_elements(b) if e.get("action_id") == action_id]
    if block_id is not None:
        exact = [(b, e) for b, e in found if b.get("block_id") == block_id]
        found = exact or [(b, e) for b, e in found if str(b.get("block_id", "")).split("#", 1)[0] == block_id]
    if len(found) > 1 and value is not None:
        found = [(b, e) for b, e in found if e.get("value") == value] or found
    if len(found) != 1:
        all_ids = [e.get("action_id") for b in blocks for e in _interactive_elements(b)]
        problem = "is ambiguous" if found else "not found"
        raise LookupError(f"action_id {action_id!r} {problem} in {where}; action_ids there: {all_ids}")
    return found[0]


class SlackClient:
    """Sends what Slack would send to the app and returns the app's ack.

    HTTP (default): signed requests to ``{app_url}/slack/events``. Socket Mode (``transport="socket"``, or
    ``SlackClient.socket_mode(fake)``): envelopes over the websocket the app opened to ``fake``; nothing is signed.
    """

    def __init__(
        self,
        app_url: str | None,
        signing_secret: str | None,
        fake: FakeSlack,
        team_id: str = "T0TEST",
        *,
        path: str = "/slack/events",
        ack_deadline: float = 3.0,
        request_timeout: float = 10.0,
        transport: Literal["http", "socket"] = "http",
    ) -> None:
        if transport not in ("http", "socket"):
            raise ValueError(f"transport must be 'http' or 'socket', not {transport!r}")
        if transport == "http" and (not app_url or not signing_secret):
            raise ValueError("the HTTP transport needs app_url and signing_secret")
        self.transport = transport
        self.events_url = app_url.rstrip("/") + path if app_url else None
        self.signing_secret = signing_secret
        self.fake = fake
        self.team_id = team_id
        self.ack_deadline = ack_deadline
        self.request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self.last_signed: tuple[bytes, dict[str, str]] | None = None  # the last HTTP request sent, as sent

    @classmethod
    def socket_mode(
        cls, fake: FakeSlack, team_id: str = "T0TEST", *, ack_deadline: float = 3.0, request_timeout: float = 10.0
    ) -> SlackClient:
        """A client that delivers over Socket Mode (the app must connect to ``fake`` with its app token)."""
        return cls(
            None,
            None,
            fake,
            team_id,
            ack_deadline=ack_deadline,
            request_timeout=request_timeout,
            transport="socket",
        )

    @property
    def socket(self) -> bool:
        """True for the Socket Mode transport."""
        return self.transport == "socket"

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ requests

    async def command(
        self,
        text: str,
        *,
        user: str = DEFAULT_USER,
        channel: str = "C_TEAM",
        command: str = "/identity",
        timestamp: int | None = None,
        signing_secret: str | None = None,
    ) -> AckResponse:
        """A slash command as Slack posts it (form-encoded, fresh response_url and trigger_id)."""
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel,
            "channel_name": self._channel_name(channel),
            "user_id": user,
            "user_name": self._user_name(user),
            "command": command,
            "text": text,
            "api_app_id": self.fake.app_id,
            "is_enterprise_install": "false",
            "response_url": self.fake.response_url(channel=channel),
            "trigger_id": self.fake.issue_trigger_id(user=user),
        }
        if self.socket:
            self._unsigned(timestamp, signing_secret)
            return await self._envelope(
                "slash_commands", fields, accepts_response_payload=True, what=f"command {command} {text!r}"
            )
        body = urlencode(fields).encode()
        return await self._post(
            body,
            "application/x-www-form-urlencoded",
            what=f"command {command} {text!r}",
            timestamp=timestamp,
            signing_secret=signing_secret,
        )

    def type(self, view_id: str, block_id: str, value: Any, action_id: str | None = None) -> None:
        """Record what the user typed or selected in an input of the current view (no request is sent)."""
        self._require_open(view_id)
        self.fake.set_input(view_id, block_id, value, action_id)

    async def choose(
        self,
        view_id: str,
        block_id: str,
        value: Any,
        *,
        action_id: str | None = None,
        user: str = DEFAULT_USER,
    ) -> AckResponse | None:
        """``type()``, then send block_actions if Slack would (dispatch_action input or actions/section element).

        Returns None when Slack sends nothing (a plain input block).
        """
        self._require_open(view_id)
        block_id, action_id = self.fake.set_input(view_id, block_id, value, action_id)
        block, element = self.fake.find_element(view_id, block_id, action_id)
        if block.get("type") == "input" and not block.get("dispatch_action"):
            return None
        state = self.fake.element_state(view_id, block_id, action_id)
        action = self._action(block_id, element, state=state, value=None)
        payload = self._view_actions_payload(view_id, user, action)
        return await self._interactive(payload, what=f"block_actions {action_id} in {view_id}")

    async def click_view(
        self,
        view_id: str,
        action_id: str,
        *,
        user: str = DEFAULT_USER,
        value: str | None = None,
        block_id: str | None = None,
    ) -> AckResponse:
        """Click a button (or pick ``value`` in an overflow/select) in a modal or Home tab."""
        self._require_open(view_id)
        view = self.fake.views[view_id]
        block, element = _find_action(view["blocks"], action_id, block_id=block_id, value=value, where=view_id)
        state = None
        if element.get("type") != "button":
            if value is None:
                raise ValueError(f"{action_id!r} is a {element.get('type')}: give the value to choose")
            self.fake.set_input(view_id, block["block_id"], value, action_id)
            state = self.fake.element_state(view_id, block["block_id"], action_id)
        action = self._action(block["block_id"], element, state=state, value=value)
        payload = self._view_actions_payload(view_id, user, action)
        return await self._interactive(payload, what=f"block_actions {action_id} in {view_id}")

    async def click_message(
        self,
        channel: str,
        ts: str,
        action_id: str,
        *,
        user: str = DEFAULT_USER,
        value: str | None = None,
        block_id: str | None = None,
    ) -> AckResponse:
        """Click a button (or pick ``value`` in an overflow/select) in a posted or ephemeral message."""
        message = self.fake.messages.get((channel, ts))
        ephemeral = None
        if message is None:
            ephemeral = next(
                (e for e in self.fake.ephemerals if e["channel"] == channel and e["message_ts"] == ts), None
            )
            if ephemeral is None:
                raise LookupError(f"no message {ts} in {channel}")
        blocks = (message or ephemeral or {}).get("blocks") or []
        block, element = _find_action(
            blocks, action_id, block_id=block_id, value=value, where=f"message {channel}/{ts}"
        )
        state = None
        if element.get("type") != "button" and value is not None:
            state = _element_state(element, _resolve_typed(element, value))
        action = self._action(block["block_id"], element, state=state, value=value)
        payload: dict[str, Any] = {
            **self._common("block_actions", user),
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": ephemeral is not None,
            },
            "trigger_id": self.fake.issue_trigger_id(user=user),
            "channel": {"id": channel, "name": self._channel_name(channel)},
            "state": {"values": {}},
            "response_url": self.fake.response_url(channel=channel, ts=ts),
            "actions": [action],
        }
        if message is not None:
            payload["message"] = {k: copy.deepcopy(v) for k, v in message.items() if k != "channel"}
        return await self._interactive(payload, what=f"block_actions {action_id} in {channel}/{ts}")

    async def submit(
        self,
        view_id: str,
        *,
        user: str = DEFAULT_USER,
        timestamp: int | None = None,
        signing_secret: str | None = None,
    ) -> AckResponse:
        """Press the modal's submit button; afterwards the fake applies the ack (close/update/push/clear/errors)."""
        self._require_open(view_id)
        top = self.fake.top_view(view_id)
        if top != view_id:
            raise LookupError(f"view {view_id} is not on top of its stack (top: {top})")
        payload = {
            **self._common("view_submission", user),
            "trigger_id": self.fake.issue_trigger_id(user=user, view_id=view_id),
            "view": self._view_payload(view_id),
            "response_urls": [],
        }
        ack = await self._interactive(
            payload, what=f"view_submission {view_id}", timestamp=timestamp, signing_secret=signing_secret
        )
        self.fake.apply_submission_ack(view_id, ack.status, ack.body)
        return ack

    async def close_view(self, view_id: str, *, user: str = DEFAULT_USER) -> AckResponse:
        """The user closes the modal: send view_closed (Slack only does so with notify_on_close) and close it."""
        self._require_open(view_id)
        clear = bool(self.fake.views[view_id].get("clear_on_close"))
        payload = {
            **self._common("view_closed", user),
            "view": self._view_payload(view_id),
            "is_cleared": clear,
        }
        ack = await self._interactive(payload, what=f"view_closed {view_id}")
        self.fake.close_view(view_id, clear=clear)
        return ack

    async def event(self, event: dict[str, Any], *, timestamp: int | None = None) -> AckResponse:
        """An Events API ``event_callback`` wrapping ``event`` (JSON body)."""
        now = int(time.time())
        envelope = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "api_app_id": self.fake.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{secrets.token_hex(5).upper()}",
            "event_time": now,
            "authorizations": [
                {
                    "team_id": self.team_id,
                    "user_id": self.fake.bot_user_id,
                    "is_bot": True,
                    "enterprise_id": None,
                }
            ],
            "is_ext_shared_channel": False,
        }
        if self.socket:
            self._unsigned(timestamp, None)
            return await self._envelope(
                "events_api",
                envelope,
                accepts_response_payload=False,
                what=f"event {event.get('type')}",
                retry_attempt=0,
                retry_reason="",
            )
        body = json.dumps(envelope).encode()
        return await self._post(body, "application/json", what=f"event {event.get('type')}", timestamp=timestamp)

    async def open_home(self, user: str = DEFAULT_USER) -> AckResponse:
        """The user opens the app's Home tab (``app_home_opened``)."""
        event = {
            "type": "app_home_opened",
            "user": user,
            "channel": dm_channel(user),
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        home_id = self.fake.home.get(user)
        if home_id is not None:
            event["view"] = self._view_payload(home_id)
        return await self.event(event)

    async def replay(self, *, resign_at: int | None = None) -> AckResponse:
        """Send the last signed HTTP request again, byte for byte (a captured request replayed). With `resign_at`
        the same body goes with a fresh timestamp and signature, as Slack's own retries do."""
        if self.last_signed is None:
            raise LookupError("no signed request was sent yet")
        body, headers = self.last_signed
        headers = dict(headers)
        if resign_at is not None:
            headers["X-Slack-Request-Timestamp"] = str(resign_at)
            headers["X-Slack-Signature"] = sign(self.signing_secret or "", str(resign_at), body)
        return await self._send(body, headers, what="replayed request")

    async def raw(self, body: bytes, headers: dict[str, str]) -> AckResponse:
        """Post exactly ``body`` with ``headers`` (for signature tests; HTTP transport only)."""
        if self.socket:
            raise TypeError("raw() posts HTTP requests; a Socket Mode client has no HTTP endpoint to post to")
        return await self._send(body, headers, what="raw request")

    # ------------------------------------------------------------------ helpers

    def _require_open(self, view_id: str) -> None:
        if view_id not in self.fake.views:
            raise LookupError(f"unknown view {view_id!r}; known: {list(self.fake.views)}")
        if not self.fake.is_open(view_id):
            raise LookupError(f"view {view_id} is closed")

    def _user_name(self, user: str) -> str:
        known = self.fake.users.get(user)
        return known.name if known is not None else user.lower()

    @staticmethod
    def _channel_name(channel: str) -> str:
        return "directmessage" if channel.startswith("D") else channel.lower()

    def _common(self, kind: str, user: str) -> dict[str, Any]:
        return {
            "type": kind,
            "team": {"id": self.team_id, "domain": TEAM_DOMAIN},
            "user": {
                "id": user,
                "username": self._user_name(user),
                "name": self._user_name(user),
                "team_id": self.team_id,
            },
            "api_app_id": self.fake.app_id,
            "token": VERIFICATION_TOKEN,
            "enterprise": None,
            "is_enterprise_install": False,
        }

    def _view_payload(self, view_id: str) -> dict[str, Any]:
        view = copy.deepcopy(self.fake.views[view_id])
        view["state"] = self.fake.view_state(view_id)
        return view

    def _view_actions_payload(self, view_id: str, user: str, action: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._common("block_actions", user),
            "container": {"type": "view", "view_id": view_id},
            "trigger_id": self.fake.issue_trigger_id(user=user, view_id=view_id),
            "view": self._view_payload(view_id),
            "actions": [action],
        }

    @staticmethod
    def _action(
        block_id: str, element: dict[str, Any], *, state: dict[str, Any] | None, value: str | None
    ) -> dict[str, Any]:
        action: dict[str, Any] = {
            "type": element.get("type"),
            "action_id": element.get("action_id"),
            "block_id": block_id,
            "action_ts": f"{time.time():.6f}",
        }
        if element.get("type") == "button":
            action["text"] = copy.deepcopy(element.get("text"))
            chosen = value if value is not None else element.get("value")
            if chosen is not None:
                action["value"] = chosen
            if element.get("style"):
                action["style"] = element["style"]
        elif state is not None:
            action.update({k: v for k, v in state.items() if k != "type"})
        elif value is not None:
            action["value"] = value
        return action

    async def _interactive(
        self,
        payload: dict[str, Any],
        *,
        what: str,
        timestamp: int | None = None,
        signing_secret: str | None = None,
    ) -> AckResponse:
        if self.socket:
            self._unsigned(timestamp, signing_secret)
            accepts = payload.get("type") in RESPONSE_PAYLOAD_TYPES
            return await self._envelope("interactive", payload, accepts_response_payload=accepts, what=what)
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return await self._post(
            body,
            "application/x-www-form-urlencoded",
            what=what,
            timestamp=timestamp,
            signing_secret=signing_secret,
        )

    @staticmethod
    def _unsigned(timestamp: int | None, signing_secret: str | None) -> None:
        if timestamp is not None or signing_secret is not None:
            raise TypeError("Socket Mode deliveries are not signed: timestamp/signing_secret only apply to HTTP")

    async def _envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool,
        what: str,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> AckResponse:
        envelope = await self.fake.send_envelope(
            kind,
            payload,
            accepts_response_payload=accepts_response_payload,
            timeout=self.request_timeout,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )
        if not envelope.acked:
            self.fake.warnings.append(f"{what}: no Socket Mode ack within {self.request_timeout:g}s")
            return AckResponse(status=504, body=None, elapsed=envelope.elapsed)
        if envelope.elapsed > self.ack_deadline:
            self.fake.warnings.append(
                f"{what}: ack took {envelope.elapsed:.2f}s (Slack gives up after {self.ack_deadline:g}s)"
            )
        return AckResponse(status=200, body=envelope.ack_payload, elapsed=envelope.elapsed)

    async def _post(
        self,
        body: bytes,
        content_type: str,
        *,
        what: str,
        timestamp: int | None = None,
        signing_secret: str | None = None,
    ) -> AckResponse:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(signing_secret or self.signing_secret or "", ts, body),
        }
        self.last_signed = (body, headers)
        return await self._send(body, headers, what=what)

    async def _send(self, body: bytes, headers: dict[str, str], *, what: str) -> AckResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        started = time.monotonic()
        assert self.events_url is not None
        async with self._session.post(self.events_url, data=body, headers=headers) as resp:
            raw = await resp.read()
            content_type = resp.content_type
            status = resp.status
        elapsed = time.monotonic() - started
        if elapsed > self.ack_deadline:
            self.fake.warnings.append(f"{what}: ack took {elapsed:.2f}s (Slack gives up after {self.ack_deadline:g}s)")
        parsed: dict[str, Any] | str | None = None
        if raw:
            text = raw.decode("utf-8", errors="replace")
            parsed = text
            if "json" in content_type or text.lstrip().startswith("{"):
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = text
        return AckResponse(status=status, body=parsed, elapsed=elapsed)


__all__ = ["AckResponse", "SlackClient", "sign"]
