"""Block Kit views and messages, built with slack_sdk.models so Slack's limits are checked before sending."""
