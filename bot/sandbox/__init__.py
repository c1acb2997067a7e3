"""Not the product: the local Slack emulator (Web API, Socket Mode, a client that plays Slack), the demo mail host
and the demo. Tests and `make demo` use it; nothing in the product imports it."""

from bot.sandbox.client import AckResponse, SlackClient, sign
from bot.sandbox.slack_api import ApiError, Call, Envelope, FakeSlack, SlackUser, SocketConnection, dm_channel

__all__ = [
    "AckResponse",
    "ApiError",
    "Call",
    "Envelope",
    "FakeSlack",
    "SlackClient",
    "SlackUser",
    "SocketConnection",
    "dm_channel",
    "sign",
]
