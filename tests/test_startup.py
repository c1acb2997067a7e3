"""`identity-bot run` refuses a token Slack rejects, with one line naming it and exit status 2."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from bot.sandbox import FakeSlack
from tests.conftest import BOT_TOKEN, SIGNING_SECRET


async def run_bot(tmp_path: Path, fake: FakeSlack, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    clean.update(
        SLACK_API_URL=fake.url,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        PORT="0",
        DATA_DIR=str(tmp_path / "data"),
        INBOUND_SMTP="127.0.0.1:0",
        SUBMISSION_SMTP="127.0.0.1:0",
        LOG_LEVEL="WARNING",
        **env,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=tmp_path,
        env=clean,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
    return proc.returncode or 0, err.decode()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-revoked-token"}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": "xapp-wrong-token"}, "SLACK_APP_TOKEN"),
    ],
)
async def test_a_token_slack_rejects_stops_start_up(
    tmp_path: Path, fake_slack: FakeSlack, env: dict[str, str], variable: str
) -> None:
    code, err = await run_bot(tmp_path, fake_slack, **env)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert variable in last and "refused" in last
    assert "xoxb-revoked-token" not in err and "xapp-wrong-token" not in err, "tokens are never printed"
