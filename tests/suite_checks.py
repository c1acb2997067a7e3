"""Checks over the whole run, made when the session finishes (so no test has to run last):

- every Slack Web API method the app called, in any test, is allowed by the manifest's scopes, and every scope the
  manifest declares was needed by something (only when the whole suite ran: a subset proves nothing about unused
  scopes);
- nothing the suite logged, at DEBUG, contains a test password or the signing secret.

A failed check fails the run with a line saying which."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class SlackCalls:
    """The session-scoped collector: fake_slack fixtures add the methods they saw the app call."""

    methods: set[str] = field(default_factory=set)


COLLECTOR = SlackCalls()
SUITE_LOG = Path(tempfile.gettempdir()) / f"identity-bot-suite-{os.getpid()}.log"
_problems: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    handler = logging.FileHandler(SUITE_LOG, mode="w", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def _whole_suite(session: pytest.Session) -> bool:
    config = session.config
    chosen = config.getoption("file_or_dir") or config.getoption("keyword") or config.getoption("markexpr")
    return not chosen and len(session.items) > 100


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.companymail import APP_PASSWORD
    from tests.conftest import SIGNING_SECRET
    from tests.test_manifest import METHOD_SCOPES, load_manifest, scopes_missing_for

    logging.shutdown()
    if SUITE_LOG.exists():
        text = SUITE_LOG.read_text(encoding="utf-8", errors="replace")
        leaked = [s for s in (APP_PASSWORD, "wrong-password-123", SIGNING_SECRET) if s in text]
        if leaked:
            _problems.append(f"the suite's log contains {len(leaked)} test secret(s): logs must never hold secrets")
    if COLLECTOR.methods:
        missing = scopes_missing_for(COLLECTOR.methods)
        if missing:
            _problems.append(f"the app called methods the manifest's scopes do not allow: {missing}")
    if _whole_suite(session) and COLLECTOR.methods:
        used = {METHOD_SCOPES[m] for m in COLLECTOR.methods if METHOD_SCOPES.get(m)} | {"commands", "chat:write.public"}
        unused = set(load_manifest()["oauth_config"]["scopes"]["bot"]) - used
        if unused:
            _problems.append(f"the manifest declares scopes nothing in the suite needed: {sorted(unused)}")
    if _problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for problem in _problems:
        terminalreporter.write_line(f"SUITE CHECK FAILED: {problem}", red=True)
