"""Logging set-up. Libraries that would print request bodies or SMTP dialogue (which can carry passwords
typed into a modal or sent in AUTH) are never allowed below INFO, whatever LOG_LEVEL says."""

from __future__ import annotations

import logging

CHATTY_LIBRARIES = (
    "slack_bolt",
    "slack_sdk",
    "aiosmtplib",
    "mail.log",
    "aiosmtpd",
    "asyncio",
    "aiohttp.access",
)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )
    logging.getLogger().setLevel(level)
    floor = max(logging.INFO, logging.getLevelNamesMapping()[level])
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(floor)
