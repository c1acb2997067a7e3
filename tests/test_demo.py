"""`make demo` keeps telling the whole story: run it as a user would and read what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_plays_the_whole_flow(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SSL_CERT"))}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.count("Email identity is ready to use:") == 2, "both identities pass all three steps"
    for expected in (
        "Sending Verified",
        "Receiving Verified",
        "Tracking Verified",
        "The mail server rejected the username or password",
        "Email identity seems to be correctly set up",
        "CC tracking address:",
        "*Approved* by @U_MANAGER",
        "Ok: relayed",
        "Sent in the last hour:* 1 of 60",
    ):
        assert expected in out, expected
    assert "Warnings:" not in out
    assert not list(tmp_path.iterdir()), "the demo cleans up after itself"
