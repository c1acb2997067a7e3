"""Slack-free domain services. They speak in domain terms and report events through a Notifier."""
