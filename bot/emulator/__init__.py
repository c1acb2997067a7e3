"""Local Slack emulator: a fake Web API server and a client that plays Slack towards the app."""

from bot.emulator.client import AckResponse, SlackClient, sign
from bot.emulator.slack_api import ApiError, Call, Envelope, FakeSlack, SlackUser, SocketConnection, dm_channel

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
