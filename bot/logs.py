"""Logging set-up. Libraries that would print request bodies or SMTP dialogue (which can carry passwords
typed into a modal, or AUTH lines) are held above DEBUG/INFO whatever LOG_LEVEL says."""

from __future__ import annotations

import logging

# Library loggers and the lowest level they may log at: Slack's log request and response bodies (view state with a
# typed SMTP password) at DEBUG; aiosmtpd logs AUTH lines (base64 credentials) at INFO under "mail.log".
LIBRARY_FLOORS = {
    "slack_bolt": logging.INFO,
    "slack_sdk": logging.INFO,
    "aiosmtplib": logging.INFO,
    "asyncio": logging.INFO,
    "aiohttp.access": logging.INFO,
    "aiosqlite": logging.INFO,  # logs every statement with its parameters at DEBUG
    "mail.log": logging.WARNING,
    "aiosmtpd": logging.WARNING,
    "mailparser_reply": logging.INFO,  # logs its regular expressions at DEBUG
    "flufl.bounce": logging.WARNING,  # logs every detector's miss
}


def quiet_libraries() -> None:
    """Raise chatty libraries' loggers (and their existing children, which Bolt gives a level of their own copied
    from the root) to their floor. Called by the runtime, so it holds in tests too."""
    existing = list(logging.root.manager.loggerDict)
    for name, floor in LIBRARY_FLOORS.items():
        for logger_name in [name] + [n for n in existing if n.startswith(name + ".")]:
            logger = logging.getLogger(logger_name)
            if logger.level < floor:
                logger.setLevel(floor)


def library_logger(name: str) -> logging.Logger:
    """A logger for a library object that copies its level from the logger it is given (Bolt's AsyncApp)."""
    logger = logging.getLogger(name)
    logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))
    return logger


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )
    logging.getLogger().setLevel(level)
    quiet_libraries()
