"""Local Slack emulator: a fake Web API server and a client that plays Slack towards the app."""

from bot.emulator.client import AckResponse, SlackClient, sign
from bot.emulator.slack_api import ApiError, Call, FakeSlack, SlackUser, dm_channel

__all__ = ["AckResponse", "ApiError", "Call", "FakeSlack", "SlackClient", "SlackUser", "dm_channel", "sign"]
